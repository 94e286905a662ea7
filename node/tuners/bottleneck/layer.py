"""The bottleneck adapter module: y -> y + W2 φ(W1 y + b1) + b2 (2md + d + m parameters)."""

import torch
from torch import nn

_ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "silu": nn.SiLU}


class BottleneckAdapter(nn.Module):
    """Applied to a sub-layer's output before the residual add and layer norm that follow it, so the
    block computes LayerNorm(h + y + W2 φ(W1 y)): with W2 = 0, b2 = 0 at init the block's output is
    exactly the pretrained one (near-identity initialisation, exact at step 0)."""

    def __init__(self, d: int, m: int, non_linearity: str, init_std: float, dtype=None, device=None):
        super().__init__()
        self.down = nn.Linear(d, m, dtype=dtype, device=device)
        self.act = _ACTIVATIONS[non_linearity]()
        self.up = nn.Linear(m, d, dtype=dtype, device=device)
        with torch.no_grad():
            self.down.weight.normal_(0.0, init_std)
            self.down.bias.zero_()
            self.up.weight.zero_()
            self.up.bias.zero_()

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return y + self.up(self.act(self.down(y)))

    def hook(self, module, inputs, output):
        """Forward hook for the wrapped output projection: replaces its output."""
        return self(output)
