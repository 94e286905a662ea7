"""The pipeline schedule on a toy model split in two and three stages, over the in-process transport.

Checks that the distributed step (any number of micro-batches) gives the same parameters as the
whole model trained in one piece, and that a silent neighbour is a timeout, not a hang.
"""

import copy

import pytest
import torch
from torch import nn

from node.train.pipeline import PipelineTimeout, QueueTransport, ShardTrainer, run_stages_in_threads

torch.set_num_threads(1)


class ToyStage(nn.Module):
    """A stage with the ModelShard call convention: embeds ids if first, returns logits if last."""

    def __init__(self, first, last, d=8, vocab=20, labels=3):
        super().__init__()
        self.first, self.last = first, last
        self.emb = nn.Embedding(vocab, d) if first else None
        self.lin = nn.Linear(d, d)
        self.head = nn.Linear(d, labels) if last else None

    def forward(self, input_ids=None, hidden_states=None, attention_mask=None):
        h = self.emb(input_ids) if self.first else hidden_states
        h = torch.tanh(self.lin(h)) * attention_mask.unsqueeze(-1)
        if self.last:
            return self.head(h.sum(1) / attention_mask.sum(1, keepdim=True))
        return h


def _batches(n, b=8, t=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        mask = torch.ones(b, t, dtype=torch.long)
        mask[: b // 2, -2:] = 0
        out.append({"input_ids": torch.randint(0, 20, (b, t), generator=g), "attention_mask": mask,
                    "labels": torch.randint(0, 3, (b,), generator=g)})
    return out


def _whole(stages):
    def fwd(batch):
        h = batch["input_ids"]
        for i, s in enumerate(stages):
            h = s(input_ids=h, attention_mask=batch["attention_mask"]) if i == 0 else \
                s(hidden_states=h, attention_mask=batch["attention_mask"])
        return h
    return fwd


@pytest.mark.parametrize("num_stages,micro", [(2, 1), (2, 4), (3, 2)])
def test_pipeline_equals_whole_model(num_stages, micro):
    torch.manual_seed(0)
    stages = [ToyStage(i == 0, i == num_stages - 1) for i in range(num_stages)]
    ref = copy.deepcopy(stages)
    batches = _batches(3)

    opt = torch.optim.AdamW([p for s in ref for p in s.parameters()], lr=0.05)
    fwd = _whole(ref)
    ref_losses = []
    for b in batches:
        opt.zero_grad()
        loss = nn.functional.cross_entropy(fwd(b), b["labels"])
        loss.backward()
        opt.step()
        ref_losses.append(loss.item())

    hub = QueueTransport.Hub()
    trainers = [ShardTrainer(s, i, num_stages, QueueTransport(hub, i), torch.optim.AdamW(s.parameters(), lr=0.05),
                             micro_batches=micro, timeout=10) for i, s in enumerate(stages)]
    losses = run_stages_in_threads(trainers, batches)
    assert losses == pytest.approx(ref_losses, abs=1e-6)
    for s, r in zip(stages, ref):
        for (n, p), (_, q) in zip(s.named_parameters(), r.named_parameters()):
            assert (p - q).abs().max().item() < 1e-6, n
    assert hub.bytes_sent[0] > 0 and hub.bytes_sent[num_stages - 1] > 0


def test_silent_neighbour_times_out():
    s = ToyStage(False, True)
    tr = ShardTrainer(s, 1, 2, QueueTransport(QueueTransport.Hub(), 1), torch.optim.AdamW(s.parameters()),
                      timeout=0.2)
    with pytest.raises(PipelineTimeout, match="stage 0 sent nothing for step 0"):
        tr.step(0)
