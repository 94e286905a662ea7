"""Who may hold a libp2p connection or open a stream to this node: the host's resource manager.

Owns two limits the library's default resource manager (``libp2p.rcmgr``) does not have, applied at the
earliest points the library offers, and the bookkeeping behind them:

- **Peers sent away.** A peer whose refused messages overrun its budget (``RefusalBudget``: a bucket of
  ``REFUSAL_BUDGET`` refusals refilled at ``REFUSAL_REFILL`` per second) is disconnected and, for
  ``SEND_AWAY`` seconds, refused a connection as soon as the Noise handshake names it, and every stream
  it opens is reset before protocol negotiation. Before, each refused message cost the victim a libp2p
  stream negotiation and a reply, without end. Who counts as refused, and who is never sent away (the
  members of a declared session), is the caller's decision (``node.p2p.pipeline``).
- **Per-IP limits.** At most ``MAX_CONNS_PER_IP`` established inbound connections per IP address: peer
  ids are free, so per-identity limits alone let one machine open any number of identities.

Everything else (global connection and stream caps, the per-peer connection rate) stays the library's.
Subclassing is what the library offers: the swarm calls ``open_connection`` (before the upgrade with only
the remote IP, after it with the peer id) and ``acquire_stream`` for each inbound stream.
"""

from __future__ import annotations

import threading
import time
from collections import Counter

from libp2p.rcmgr.manager import ResourceManager

from node.p2p.identity import eth_address_from_peer_id
from node.p2p.limits import MAX_CONNS_PER_IP, REFUSAL_BUDGET, REFUSAL_REFILL, SEND_AWAY


class RefusalBudget:
    """Refused messages per peer, as a token bucket: ``spend`` says when a peer overran its budget."""

    def __init__(self, budget: int = REFUSAL_BUDGET, refill: float = REFUSAL_REFILL,
                 max_peers: int = 4096) -> None:
        self.budget, self.refill, self.max_peers = budget, refill, max_peers
        self._left: dict[str, tuple[float, float]] = {}   # peer -> (refusals left, at)
        self._lock = threading.Lock()

    def spend(self, peer: str) -> bool:
        """Count one refusal of ``peer``; True when that overran its budget (the bucket starts full again)."""
        now = time.monotonic()
        with self._lock:
            left, at = self._left.get(peer, (float(self.budget), now))
            left = min(float(self.budget), left + (now - at) * self.refill) - 1.0
            if left < 0:
                self._left.pop(peer, None)
                return True
            if peer not in self._left and len(self._left) >= self.max_peers:
                full = self.budget / self.refill if self.refill > 0 else 0.0
                self._left = {p: (v, t) for p, (v, t) in self._left.items() if now - t < full}
            self._left[peer] = (left, now)
            return False


class PeerGate(ResourceManager):
    """The library's resource manager (its defaults, as ``new_resource_manager`` makes it) plus the two
    limits above; thread-safe (the swarm calls it in the trio thread, refusals are counted in others)."""

    def __init__(self, per_ip: int = MAX_CONNS_PER_IP) -> None:
        super().__init__(enable_memory_pooling=True)
        self.per_ip = per_ip
        self._away: dict[str, float] = {}     # lower-case Ethereum address -> refused until
        self._ids: dict[str, str] = {}        # base58 peer id -> address (a cache: decoding costs a hash)
        self._per_ip: Counter = Counter()     # established inbound connections per IP
        self._gate_lock = threading.Lock()
        self.turned_away = 0                  # connections and streams refused to peers sent away
        self.over_ip_limit = 0                # connections refused over the per-IP limit

    # ------------------------------------------------------------------ peers sent away
    def send_away(self, address: str, seconds: float = SEND_AWAY) -> None:
        with self._gate_lock:
            now = time.monotonic()
            if len(self._away) >= 4096:
                self._away = {a: t for a, t in self._away.items() if t > now}
            self._away[address.lower()] = now + seconds

    def is_away(self, address: str) -> bool:
        until = self._away.get(address.lower())
        if until is None:
            return False
        if until <= time.monotonic():
            with self._gate_lock:
                self._away.pop(address.lower(), None)
            return False
        return True

    def _away_peer(self, peer_id: str) -> bool:
        if not peer_id or not self._away:   # the common case costs a dict lookup
            return False
        address = self._ids.get(peer_id)
        if address is None:
            try:
                address = eth_address_from_peer_id(peer_id).lower()
            except Exception:
                return False
            if len(self._ids) >= 4096:
                self._ids.clear()
            self._ids[peer_id] = address
        return self.is_away(address)

    # ------------------------------------------------------------------ the library's hooks
    def acquire_connection(self, peer_id: str = "", endpoint_ip: str | None = None,
                           direction: str = "inbound") -> bool:
        if self._away_peer(str(peer_id or "")):
            self.turned_away += 1
            return False
        counted = bool(peer_id) and bool(endpoint_ip) and direction == "inbound"
        if counted:
            with self._gate_lock:
                if self._per_ip[endpoint_ip] >= self.per_ip:
                    self.over_ip_limit += 1
                    return False
                self._per_ip[endpoint_ip] += 1
        ok = super().acquire_connection(peer_id, endpoint_ip=endpoint_ip, direction=direction)
        if counted and not ok:
            self._release_ip(endpoint_ip)
        return ok

    def release_connection(self, peer_id: str = "", endpoint_ip: str | None = None,
                           direction: str = "inbound") -> None:
        if peer_id and endpoint_ip and direction == "inbound":
            self._release_ip(endpoint_ip)
        super().release_connection(peer_id, endpoint_ip=endpoint_ip, direction=direction)

    def acquire_stream(self, peer_id: str, direction: object) -> bool:
        if self._away_peer(str(peer_id or "")):
            self.turned_away += 1
            return False
        return super().acquire_stream(peer_id, direction)

    def connections_from(self, ip: str) -> int:
        return self._per_ip.get(ip, 0)

    def _release_ip(self, ip: str) -> None:
        with self._gate_lock:
            if self._per_ip[ip] > 1:
                self._per_ip[ip] -= 1
            else:
                self._per_ip.pop(ip, None)
