"""How long N blocks take on the chain a command talks to, in words a user can act on.

Governance and join windows count blocks, so "wait 2 blocks" means nothing without the block time: the local
chain's is what ``bsns chain up`` recorded in the home (``None``: a block only per transaction); any other
chain's is estimated from the timestamps of its recent blocks.
"""

from __future__ import annotations

from dataclasses import dataclass

_UNKNOWN = -1.0


@dataclass
class ChainClock:
    head: int
    seconds_per_block: float | None  # None: blocks only when transactions arrive; _UNKNOWN: too few blocks

    @classmethod
    def of(cls, w3, rpc: str) -> "ChainClock":
        from node.chain.rpc import recorded_chain

        head = w3.eth.block_number
        rec = recorded_chain()
        if rec is not None and rec["rpc"].rstrip("/") == rpc.rstrip("/"):
            return cls(head, rec.get("block_time"))
        return cls(head, _estimate(w3, head))

    def wait(self, blocks: int) -> str:
        """``about 2 s at 1 s blocks``: how long until ``blocks`` more blocks are mined."""
        blocks = max(blocks, 0)
        if self.seconds_per_block is None:
            return (f"{blocks} more block{'s' * (blocks != 1)}; this chain mines a block only when a transaction "
                    f"arrives (`bsns chain up --on-demand`)")
        if self.seconds_per_block == _UNKNOWN:
            return f"{blocks} more block{'s' * (blocks != 1)}"
        return f"about {_duration(blocks * self.seconds_per_block)} at {self.seconds_per_block:g} s blocks"

    def eta_seconds(self, blocks: int) -> float | None:
        if self.seconds_per_block is None or self.seconds_per_block == _UNKNOWN:
            return None
        return max(blocks, 0) * self.seconds_per_block


def _estimate(w3, head: int, span: int = 20) -> float:
    if head < 2:
        return _UNKNOWN
    first = max(1, head - span)  # block 0's timestamp says when the chain was created, not its pace
    t0, t1 = w3.eth.get_block(first)["timestamp"], w3.eth.get_block(head)["timestamp"]
    return round((t1 - t0) / (head - first), 2) if head > first else _UNKNOWN


def _duration(seconds: float) -> str:
    s = round(seconds)
    return f"{s} s" if s < 120 else f"{s // 60} min {s % 60:02d} s"
