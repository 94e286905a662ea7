"""The receiver's side of ``/bsns/pipeline/1``: what it expects, what it holds, what it drops.

Owns the rule for late and duplicated messages. Per (session, direction) the inbox keeps a watermark,
the (round, step) of the newest message the trainer has consumed; a message for an older (round, step)
is stale. Tags already admitted (delivered, buffered or in flight) are duplicates. Both are refused at
the header, before any payload moves. Messages for the current or later steps wait in a bounded
buffer until ``take`` asks for their exact tags, under three quotas counted over messages held
(arrived or arriving, not yet taken): the whole buffer, one session, one sender; a message over a
quota is told to retry later (nothing is held for it), so a flood of tags for a session that never
runs cannot refuse another session's messages. Who may send a message at all is decided before the
inbox is asked (``node.p2p.admission``). Thread-safe: handlers admit and deliver from the trio
thread, trainers take from their own threads.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

from node.p2p.admission import Refusal
from node.p2p.errors import P2PError
from node.p2p.limits import MAX_BUFFERED, MAX_PER_SENDER, MAX_PER_SESSION
from node.p2p.wire import ST_DROPPED, ST_RETRY, Tags


class RecvTimeout(P2PError, TimeoutError):
    """No message with the requested tags arrived in time (also a builtin ``TimeoutError``, which is
    how callers outside ``node.p2p``, e.g. the shard trainer, recognise a timeout)."""


class Inbox:
    def __init__(self, max_buffered: int = MAX_BUFFERED, per_session: int = MAX_PER_SESSION,
                 per_sender: int = MAX_PER_SENDER) -> None:
        self._cond = threading.Condition()
        self._watermark: dict[tuple[int, str], tuple[int, int]] = {}
        self._admitted: dict[Tags, str] = {}          # tags held (arriving or ready) -> sender
        self._ready: dict[Tags, tuple[Any, str]] = {}
        self._per_session: Counter = Counter()
        self._per_sender: Counter = Counter()
        self._max, self._max_session, self._max_sender = max_buffered, per_session, per_sender
        self._closed = False
        self.dropped = 0
        self.busy = 0                                  # messages told to retry for a full quota

    def close(self) -> None:
        """Wake every waiting ``take``: the node is shutting down."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _stale(self, tags: Tags) -> bool:
        mark = self._watermark.get((tags.session, tags.direction))
        return mark is not None and (tags.round, tags.step) < mark

    def watermark(self, session: int, direction: str) -> tuple[int, int] | None:
        """The (round, step) last consumed in that session and direction, if any."""
        with self._cond:
            return self._watermark.get((session, direction))

    def admit(self, tags: Tags, sender: str = "") -> Refusal | None:
        """Reserve ``tags`` for a message from ``sender``; why it is refused, or None."""
        with self._cond:
            if self._stale(tags):
                self.dropped += 1
                return Refusal(ST_DROPPED, f"stale: {tags} is older than the step being trained")
            if tags in self._admitted:
                self.dropped += 1
                return Refusal(ST_DROPPED, f"duplicate: {tags} was already received")
            for count, limit, what in ((len(self._admitted), self._max, "receive buffer"),
                                       (self._per_session[tags.session], self._max_session, "session's share"),
                                       (self._per_sender[sender], self._max_sender, "sender's share")):
                if count >= limit:
                    self.busy += 1
                    return Refusal(ST_RETRY, f"busy: {what} full ({limit} messages)")
            self._hold(tags, sender)
            return None

    def _hold(self, tags: Tags, sender: str) -> None:
        self._admitted[tags] = sender
        self._per_session[tags.session] += 1
        self._per_sender[sender] += 1

    def _release(self, tags: Tags) -> None:
        sender = self._admitted.pop(tags, None)
        if sender is None:
            return
        for counter, key in ((self._per_session, tags.session), (self._per_sender, sender)):
            counter[key] -= 1
            if counter[key] <= 0:
                del counter[key]

    def abort(self, tags: Tags) -> None:
        """A transfer failed half-way: forget the reservation so a resend is accepted."""
        with self._cond:
            if tags not in self._ready:
                self._release(tags)

    def deliver(self, tags: Tags, tensor: Any, sender: str) -> None:
        with self._cond:
            if self._stale(tags):  # the trainer moved on while the payload travelled
                self._release(tags)
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
                self._release(t)
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
            for t in [t for t in self._admitted if t.session == session]:
                self._release(t)
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
            item = self._ready.pop(tags)  # its tags stay held until the watermark passes: a late copy is a duplicate
        self.advance(tags.session, tags.direction, tags.round, tags.step)
        return item

    def pending(self) -> list[Tags]:
        with self._cond:
            return sorted(self._ready)
