"""``PipelineTransport``: the shard trainer's ``Transport`` (send/recv of dicts of tensors) over a P2PNode.

Owns the mapping from a pipeline key ``(step, micro_batch, direction)`` of one session round to wire
``Tags``, and from stage numbers to peer ids. It matches ``node.train.pipeline.Transport`` by shape,
so ``node.p2p`` does not import ``node.train``. Building one declares the round to the node's
admission rule (``P2PNode.expect_session``): forward messages only from the previous stage's peer,
backward ones only from the next stage's, no payload above ``max_frame``; a message from anyone else
is refused at its header and never occupies a tag. ``recv`` checks the sender again (a node run with
``OpenAdmission`` takes messages from any authorised peer).

Error contract (builtin-based, since ``node.p2p`` cannot name the trainer's errors): ``recv`` raises
``RecvTimeout``, also a ``TimeoutError``, when nothing came in time; every other failure is a
``P2PError`` (a ``BsnsError``); ``send`` returns False when the peer dropped the message as stale or
duplicate. The trainer maps these to ``PipelineTimeout`` / ``PipelineError``.

A neighbour that went away since the round's transport was built (its last connection to this node
closed: killed, or restarted and so back at the start of the round) is ``PeerLeft`` at once, on ``send``
and during a ``recv``'s wait, instead of after the timeout: the messages this round still expects from or
for it will never come, and both halves of the pipeline can only meet again at the start of the round
(the daemon retries it from its checkpoint; the restarted neighbour starts there too).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from node.p2p.errors import P2PError, PeerLeft
from node.p2p.identity import eth_address_from_peer_id
from node.p2p.inbox import RecvTimeout
from node.p2p.limits import PRESENCE_POLL, SEND_PATIENCE
from node.p2p.wire import Tags


class PipelineTransport:
    def __init__(self, node: Any, session: int, rnd: int, stage_peers: Mapping[int, str], *,
                 stage: int | None = None, max_frame: int | None = None,
                 micro_batches: int | None = None) -> None:
        """``stage_peers``: stage -> peer id of this replica's pipeline (this node's own stage may be in
        it, else give ``stage``); ``max_frame``: the largest message the job can produce (default:
        the node's frame limit)."""
        self.node, self.session, self.round = node, session, rnd
        self.stage_peers = dict(stage_peers)
        self._addresses: dict[int, str] = {}
        mine = [s for s, pid in self.stage_peers.items() if pid == node.peer_id]
        if stage is None and len(mine) != 1:
            raise P2PError("this node's stage is not among the stage peers: give it as stage=")
        self.stage = mine[0] if stage is None else stage
        senders = {}
        for direction, other in (("fwd", self.stage - 1), ("bwd", self.stage + 1)):
            if other in self.stage_peers:
                try:
                    senders[direction] = self._address(other)
                except P2PError:
                    pass  # a bad registry entry: nobody may send that direction; recv says why
        node.expect_session(session, rnd, senders, max_frame or node.max_frame, micro_batches)
        self._generations = {s: self._generation(pid) for s, pid in self.stage_peers.items() if s != self.stage}

    def _generation(self, peer_id: str) -> int:
        gen = getattr(self.node, "peer_generation", None)  # a node without presence never reports a peer left
        return gen(peer_id) if gen is not None else 0

    def _check_present(self, stage: int) -> None:
        """Raise ``PeerLeft`` if ``stage``'s peer went away since this transport was built."""
        if stage in self._generations and self._generation(self._peer(stage)) != self._generations[stage]:
            raise PeerLeft(f"stage {stage}'s peer left (its connection closed) during round {self.round}")

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
        # the receiver may still be setting up its side of the round (it answers "not now" until its
        # transport declares the session): wait for it as long as a receive would
        self._check_present(to_stage)
        return self.node.send_tensor(self._peer(to_stage), self._tags(key), dict(tensors),
                                     timeout=max(self.node.timeout, SEND_PATIENCE))

    def recv(self, from_stage: int, key: tuple[int, int, str], timeout: float) -> dict[str, Any]:
        """The message for ``key`` from ``from_stage``; raises ``RecvTimeout`` when none comes in time."""
        expected = self._address(from_stage)
        msg, sender = self._wait(from_stage, key, timeout)
        if sender != expected:
            raise P2PError(f"message for {key} came from {sender}, not stage {from_stage} ({expected})")
        if not isinstance(msg, dict):
            raise P2PError(f"message for {key} is a bare tensor, expected named tensors")
        return msg

    def _wait(self, from_stage: int, key: tuple[int, int, str], timeout: float) -> tuple[Any, str]:
        """Take the message, looking every ``PRESENCE_POLL`` seconds whether its sender is still there."""
        deadline = time.monotonic() + timeout
        while True:
            self._check_present(from_stage)
            left = deadline - time.monotonic()
            try:
                return self.node.recv_with_sender(self._tags(key), max(0.0, min(left, PRESENCE_POLL)))
            except RecvTimeout:
                if left <= PRESENCE_POLL:
                    raise RecvTimeout(f"no message for {self._tags(key)} within {timeout:g}s") from None
