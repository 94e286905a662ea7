"""``PipelineTransport``: the shard trainer's ``Transport`` (send/recv of dicts of tensors) over a P2PNode.

Owns the mapping from a pipeline key ``(step, micro_batch, direction)`` of one session round to wire
``Tags``, and from stage numbers to peer ids. It matches ``node.train.pipeline.Transport`` by shape,
so ``node.p2p`` does not import ``node.train``. A message is only accepted from the peer that holds
the expected stage: anything else is an error, never silently taken for this step.

Error contract (builtin-based, since ``node.p2p`` cannot name the trainer's errors): ``recv`` raises
``RecvTimeout``, also a ``TimeoutError``, when nothing came in time; every other failure is a
``P2PError`` (a ``BsnsError``); ``send`` returns False when the peer dropped the message as stale or
duplicate. The trainer maps these to ``PipelineTimeout`` / ``PipelineError``.
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
        self._addresses: dict[int, str] = {}

    def _tags(self, key: tuple[int, int, str]) -> Tags:
        step, micro, direction = key
        return Tags(self.session, self.round, step, micro, direction)

    def _peer(self, stage: int) -> str:
        if stage not in self.stage_peers:
            raise P2PError(f"no peer known for stage {stage}")
        return self.stage_peers[stage]

    def _address(self, stage: int) -> str:
        """The Ethereum address behind a stage's peer id (parsed on first use: a bad registry entry
        fails the messages of that stage, not the construction of the transport)."""
        if stage not in self._addresses:
            self._addresses[stage] = eth_address_from_peer_id(self._peer(stage))
        return self._addresses[stage]

    def send(self, to_stage: int, key: tuple[int, int, str], tensors: Mapping[str, Any]) -> bool:
        """Send one message; False when the peer dropped it as stale or duplicate."""
        return self.node.send_tensor(self._peer(to_stage), self._tags(key), dict(tensors))

    def recv(self, from_stage: int, key: tuple[int, int, str], timeout: float) -> dict[str, Any]:
        """The message for ``key`` from ``from_stage``; raises ``RecvTimeout`` when none comes in time."""
        expected = self._address(from_stage)
        msg, sender = self.node.recv_with_sender(self._tags(key), timeout)
        if sender != expected:
            raise P2PError(f"message for {key} came from {sender}, not stage {from_stage} ({expected})")
        if not isinstance(msg, dict):
            raise P2PError(f"message for {key} is a bare tensor, expected named tensors")
        return msg
