"""The two narrow interfaces the session runner needs from the outside world: the chain and the network.

``ChainPort`` is what a node reads and writes on chain during a session (rounds, final hashes, commits,
closing a round past its deadline; for a FedPEAT session the controller's round plans and the attached emulators); ``NetPort`` is what it needs from peers (a pipeline transport to its
replica's other stages, content-addressed blobs, small announcements to the session's topic).
The daemon implements them over ``node.chain`` and ``node.p2p`` (``node/daemon/real_ports.py``); the
unit tests implement them in memory. Keeping them this small is what lets ``node.daemon.session`` be
tested without a chain or sockets, and keeps chain, p2p and train from importing each other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

ZERO_HASH = "0x" + "00" * 32


@dataclass(frozen=True)
class Member:
    """A node taking part in a session, as assigned on chain."""

    address: str
    shard: int
    replica: int
    peer_id: str = ""
    addr: str = ""


@dataclass
class Announcement:
    """A replica's local update for one (round, shard), served by ``peer`` under ``hash``."""

    session: int
    round: int
    shard: int
    replica: int
    hash: str
    samples: int
    peer: str
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        """``update`` (a local update is served) or ``set`` (the updates this replica aggregates)."""
        return self.extra.get("kind", "update")


class ChainPort(Protocol):
    def current_round(self, session: int, shard: int) -> int: ...

    def final_hash(self, session: int, rnd: int, shard: int) -> str | None:
        """The round's final aggregate hash, or None while it is not final."""

    def committed(self, session: int, rnd: int, shard: int) -> bool:
        """Whether this node's commit for the round is on chain (or its transaction is in flight)."""

    def commit(self, session: int, rnd: int, shard: int, aggregate_hash: str, local_hash: str) -> None: ...

    def try_close_round(self, session: int, rnd: int, shard: int) -> bool:
        """Close a round whose current epoch passed its deadline without a quorum (the chain retries it in a
        new epoch, or aborts the session after its last one); False while the deadline has not passed."""

    def epoch(self, session: int, shard: int) -> int:
        """The attempt (epoch) of the shard's current round; a retried round counts up."""

    def session_failed(self, session: int) -> bool:
        """Whether the session failed on chain (too few replicas at start, or a round out of epochs)."""

    def members(self, session: int) -> list[Member]: ...

    # local updates are bound on chain before they are revealed, and travel signed (ISessionUpdates)
    def bind(self, session: int, rnd: int, shard: int, update_hash: str) -> str | None:
        """Bind this node's local update of the round (once; again after a restart is a no-op) and return its
        signature over the update (hex) for the announcement; None when the update cannot be bound (the bind
        window closed, or another update of ours is bound: signing this one would prove us equivocating)."""

    def bindings_settled(self, session: int, rnd: int, shard: int, replicas: frozenset[int]) -> bool:
        """Whether updates may be revealed: every replica in ``replicas`` bound, or the bind window closed."""

    def check_update(self, session: int, rnd: int, shard: int, replica: int, update_hash: str,
                     signature: str | None) -> str:
        """``bound`` (signed by the replica's member and equal to its binding), ``unbound`` (not its
        signature, or it bound nothing: ignored), or ``equivocation`` (its signature over another update
        than the one it bound: a proof)."""

    def prove_equivocation(self, session: int, rnd: int, shard: int, replica: int, update_hash: str,
                           signature: str) -> bool:
        """Submit a signed update that differs from the author's binding; False if already proven."""

    # FedPEAT sessions only (node.daemon.fedpeat); ledger rounds are 1-based: session round r obeys plan r + 1
    def round_plan(self, session: int, ledger_round: int) -> list[int] | None:
        """Per replica, the retention in basis points the controller planned for the round (0 = sits out);
        None while no plan is recorded."""

    def attached_emulators(self, session: int) -> dict[int, str]:
        """Retention in basis points -> hash of the emulator attached to the session for it (the first one
        attached with that retention)."""


class NetPort(Protocol):
    def transport(self, session: int, rnd: int, replica: int, stage_peers: dict[int, Member],
                  limits: tuple[int, int] | None = None):
        """A ``node.train.pipeline.Transport`` to the other stages of this replica for one round;
        ``limits``: (largest message in bytes, micro-batches per step) the job can produce."""

    def serve(self, data: bytes) -> str:
        """Make bytes fetchable by their keccak-256 hash; returns the hash."""

    def pin(self, data: bytes) -> str:
        """Serve bytes and keep them in memory while the node runs (a published adapter); returns the hash."""

    def end_session(self, session: int) -> None:
        """The session is over on this node: its pipeline messages are refused and its inbox state dropped."""

    def announce(self, ann: Announcement) -> None: ...

    def announcements(self, session: int, rnd: int, shard: int, kind: str = "update") -> list[Announcement]:
        """The latest announcement of each replica of that kind for (session, round, shard)."""

    def fetch(self, peer: str, h: str, timeout: float) -> bytes:
        """Bytes whose keccak-256 is ``h`` from ``peer`` (verified), or raise."""

    def bytes_moved(self) -> tuple[int, int]:
        """(sent, received) payload bytes so far, for the round records."""

    def gone_for(self, peer: str) -> float | None:
        """Seconds since this node's last connection to ``peer`` closed, while none is open again; None while
        connected or never seen to leave (a peer this node never talked to is not known to be gone)."""


Clock = Callable[[], float]
