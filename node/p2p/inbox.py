"""The receiver's side of ``/bsns/pipeline/1``: what it expects, what it holds, what it drops.

Owns the rule for late and duplicated messages. Per (session, direction) the inbox keeps a watermark,
the (round, step) of the newest message the trainer has consumed; a message for an older (round, step)
is stale. Tags already admitted (delivered, buffered or in flight) are duplicates. Both are refused at
the header, before any payload moves. Messages for the current or later steps wait in a bounded
buffer until ``take`` asks for their exact tags. Thread-safe: handlers admit and deliver from the trio
thread, trainers take from their own threads.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from node.p2p.errors import P2PError
from node.p2p.wire import Tags


class RecvTimeout(P2PError, TimeoutError):
    """No message with the requested tags arrived in time (also a builtin ``TimeoutError``, which is
    how callers outside ``node.p2p``, e.g. the shard trainer, recognise a timeout)."""


class Inbox:
    def __init__(self, max_buffered: int = 256) -> None:
        self._cond = threading.Condition()
        self._watermark: dict[tuple[int, str], tuple[int, int]] = {}
        self._admitted: set[Tags] = set()
        self._ready: dict[Tags, tuple[Any, str]] = {}
        self._max = max_buffered
        self._closed = False
        self.dropped = 0

    def close(self) -> None:
        """Wake every waiting ``take``: the node is shutting down."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _stale(self, tags: Tags) -> bool:
        mark = self._watermark.get((tags.session, tags.direction))
        return mark is not None and (tags.round, tags.step) < mark

    def admit(self, tags: Tags) -> str | None:
        """Reserve ``tags`` for an incoming message; the reason it is refused, or None."""
        with self._cond:
            if self._stale(tags):
                self.dropped += 1
                return f"stale: {tags} is older than the step being trained"
            if tags in self._admitted:
                self.dropped += 1
                return f"duplicate: {tags} was already received"
            if len(self._ready) >= self._max:
                return "busy: receive buffer full"
            self._admitted.add(tags)
            return None

    def abort(self, tags: Tags) -> None:
        """A transfer failed half-way: forget the reservation so a resend is accepted."""
        with self._cond:
            if tags not in self._ready:
                self._admitted.discard(tags)

    def deliver(self, tags: Tags, tensor: Any, sender: str) -> None:
        with self._cond:
            if self._stale(tags):  # the trainer moved on while the payload travelled
                self._admitted.discard(tags)
                self.dropped += 1
                return
            self._ready[tags] = (tensor, sender)
            self._cond.notify_all()

    def advance(self, session: int, direction: str, round_: int, step: int) -> None:
        """Declare everything before (round, step) stale and free what it held."""
        with self._cond:
            key = (session, direction)
            mark = (round_, step)
            if key in self._watermark and self._watermark[key] >= mark:
                return
            self._watermark[key] = mark
            for t in [t for t in self._admitted if t.session == session and t.direction == direction
                      and (t.round, t.step) < mark]:
                self._admitted.discard(t)
                if self._ready.pop(t, None) is not None:
                    self.dropped += 1

    def reset(self, session: int) -> None:
        """Forget everything about ``session`` (watermarks, reservations, buffered messages).

        For a round that is retried from its first step: the steps consumed by the failed attempt
        must be accepted again.
        """
        with self._cond:
            for key in [k for k in self._watermark if k[0] == session]:
                del self._watermark[key]
            self._admitted = {t for t in self._admitted if t.session != session}
            for t in [t for t in self._ready if t.session == session]:
                del self._ready[t]

    def take(self, tags: Tags, timeout: float) -> tuple[Any, str]:
        """Block until the message with exactly ``tags`` is here; consuming it moves the watermark."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while tags not in self._ready:
                if self._closed:
                    raise P2PError("p2p node closed")
                if self._stale(tags):
                    raise P2PError(f"{tags} is older than the step being trained")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RecvTimeout(f"no message for {tags} within {timeout:g}s")
                self._cond.wait(left)
            item = self._ready.pop(tags)
        self.advance(tags.session, tags.direction, tags.round, tags.step)
        return item

    def pending(self) -> list[Tags]:
        with self._cond:
            return sorted(self._ready)
