"""Who may send which pipeline message to this node: the admission rule, checked at the frame header.

Owns the receiver's expectations per session (which peer sends each direction to this node, the
largest frame the job can produce, how many micro-batches a step has) and the verdict on one header:
admitted, refused (the sender is not the member expected at that stage, or the session gives it no
such message), retry later (a session this node has not declared yet, or a step too far ahead of the
one being trained) or an error (a frame larger than the job can produce, a micro-batch the job does
not have). The verdict is reached before a byte of payload is read or allocated.

Two strategies, chosen by whoever builds the node (``P2PNode(admission=...)``):

- ``SessionAdmission`` (the default, what the daemon runs): only declared sessions, only the
  declared sender per direction, within ``STEP_WINDOW`` steps of the step being trained;
- ``OpenAdmission``: any authorised peer, any session (tools and benchmarks that move tensors
  between nodes they started themselves).

Stale and duplicate tags and the buffer quotas are the inbox's (``node.p2p.inbox``), because they
depend on what the trainer consumed.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import NamedTuple

from node.p2p.limits import STEP_WINDOW
from node.p2p.wire import ST_DROPPED, ST_ERROR, ST_REFUSED, ST_RETRY, Header, Tags


class Refusal(NamedTuple):
    """Why a message is not taken, and the reply status that tells the sender what to do."""

    status: int
    reason: str


@dataclass(frozen=True)
class Expectation:
    """What this node expects in one session: declared by the pipeline transport of each round."""

    session: int
    round: int
    senders: dict[str, str]        # direction -> lower-case Ethereum address of the only sender
    max_frame: int                 # the largest payload the job can produce, in bytes
    micro_batches: int | None = None


class Admission:
    """The strategy interface: ``check`` a header from ``sender`` (an authenticated address)."""

    def expect(self, exp: Expectation) -> None:
        """Declare (or update for a new round) what ``exp.session`` may send this node."""

    def forget(self, session: int) -> None:
        """The session is over here: refuse its messages from now on."""

    def check(self, sender: str, header: Header, mark: tuple[int, int] | None) -> Refusal | None:
        """None to admit; ``mark`` is the (round, step) the trainer consumed last in that direction."""
        raise NotImplementedError

    def frame_limit(self, session: int) -> int | None:
        """The frame bound of a declared session (None: the host's)."""
        return None

    def is_member(self, address: str) -> bool:
        """Whether ``address`` sends this node messages of a declared session (it is never sent away)."""
        return False


class OpenAdmission(Admission):
    """Any authorised peer may send any session's messages (the host's frame limit still applies)."""

    def check(self, sender: str, header: Header, mark: tuple[int, int] | None) -> Refusal | None:
        return None


class SessionAdmission(Admission):
    def __init__(self, window: int = STEP_WINDOW) -> None:
        self._window = window
        self._sessions: dict[int, Expectation] = {}
        self._lock = threading.Lock()

    def expect(self, exp: Expectation) -> None:
        senders = {d: a.lower() for d, a in exp.senders.items() if a}
        with self._lock:
            self._sessions[exp.session] = Expectation(exp.session, exp.round, senders, exp.max_frame,
                                                      exp.micro_batches)

    def forget(self, session: int) -> None:
        with self._lock:
            self._sessions.pop(session, None)

    def frame_limit(self, session: int) -> int | None:
        with self._lock:
            exp = self._sessions.get(session)
        return exp.max_frame if exp else None

    def is_member(self, address: str) -> bool:
        address = address.lower()
        with self._lock:
            return any(address in exp.senders.values() for exp in self._sessions.values())

    def check(self, sender: str, header: Header, mark: tuple[int, int] | None) -> Refusal | None:
        tags: Tags = header.tags
        with self._lock:
            exp = self._sessions.get(tags.session)
        if exp is None:
            # maybe the session has not started here yet: nothing is held, the sender may ask again
            return Refusal(ST_RETRY, f"not expecting session {tags.session} (yet)")
        expected = exp.senders.get(tags.direction)
        if expected is None or expected != sender.lower():
            return Refusal(ST_REFUSED, f"{sender} is not the member that sends {tags.direction} messages "
                                       f"of session {tags.session} to this node")
        if header.payload_len > exp.max_frame:
            return Refusal(ST_ERROR, f"frame of {header.payload_len} bytes exceeds session {tags.session}'s "
                                     f"{exp.max_frame}-byte bound")
        if exp.micro_batches is not None and tags.micro >= exp.micro_batches:
            return Refusal(ST_ERROR, f"micro-batch {tags.micro} outside the job's {exp.micro_batches}")
        if not exp.round <= tags.round <= exp.round + 1:
            if tags.round < exp.round:
                return Refusal(ST_DROPPED, f"stale: {tags} belongs to a round this node has finished")
            return Refusal(ST_RETRY, f"{tags} is for a round this node has not reached")
        if mark is not None and tags.step > mark[1] + self._window:
            return Refusal(ST_RETRY, f"{tags} is more than {self._window} steps ahead of the step being trained")
        return None
