"""Full fine-tuning: unfreeze every parameter of the shard (the registry froze them first)."""

from __future__ import annotations

from node.tuners.full.config import FullConfig


def inject_full(shard, cfg: FullConfig) -> None:
    for p in shard.parameters():
        p.requires_grad_(True)
