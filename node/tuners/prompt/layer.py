"""The soft prompt module: n trainable embedding vectors, the same for every example."""

import torch
from torch import nn


class SoftPrompt(nn.Module):
    """``forward(batch)`` -> (batch, n, d)."""

    def __init__(self, embeddings: torch.Tensor):
        super().__init__()
        self.embedding = nn.Parameter(embeddings.detach().clone())

    @property
    def num_tokens(self) -> int:
        return self.embedding.shape[0]

    def forward(self, batch: int) -> torch.Tensor:
        return self.embedding.unsqueeze(0).expand(batch, -1, -1)
