"""``PipelineTransport``: the shard trainer's ``Transport`` (send/recv of dicts of tensors) over a P2PNode.

Owns the mapping from a pipeline key ``(step, micro_batch, direction)`` of one session round to wire
``Tags``, and from stage numbers to peer ids. It matches ``node.train.pipeline.Transport`` by shape,
so ``node.p2p`` does not import ``node.train``. A message is only accepted from the peer that holds
the expected stage: anything else is an error, never silently taken for this step.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from node.p2p.errors import P2PError
from node.p2p.identity import eth_address_from_peer_id
from node.p2p.wire import Tags


class PipelineTransport:
    def __init__(self, node: Any, session: int, rnd: int, stage_peers: Mapping[int, str]) -> None:
        self.node, self.session, self.round = node, session, rnd
        self.stage_peers = dict(stage_peers)
        self._addresses = {s: eth_address_from_peer_id(p) for s, p in self.stage_peers.items()}

    def _tags(self, key: tuple[int, int, str]) -> Tags:
        step, micro, direction = key
        return Tags(self.session, self.round, step, micro, direction)

    def send(self, to_stage: int, key: tuple[int, int, str], tensors: Mapping[str, Any]) -> bool:
        """Send one message; False when the peer dropped it as stale or duplicate."""
        if to_stage not in self.stage_peers:
            raise P2PError(f"no peer known for stage {to_stage}")
        return self.node.send_tensor(self.stage_peers[to_stage], self._tags(key), dict(tensors))

    def recv(self, from_stage: int, key: tuple[int, int, str], timeout: float) -> dict[str, Any]:
        """The message for ``key`` from ``from_stage``; raises ``RecvTimeout`` when none comes in time."""
        msg, sender = self.node.recv_with_sender(self._tags(key), timeout)
        expected = self._addresses.get(from_stage)
        if sender != expected:
            raise P2PError(f"message for {key} came from {sender}, not stage {from_stage} ({expected})")
        if not isinstance(msg, dict):
            raise P2PError(f"message for {key} is a bare tensor, expected named tensors")
        return msg
