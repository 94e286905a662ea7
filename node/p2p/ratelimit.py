"""Per-peer request limits for the open protocols: a token bucket and a cap on requests in progress.

The bucket counts cost, not requests: a request needs one token to start, and its owner may ``charge``
more once it knows the size of the answer (the bucket may go into debt, so one large answer is
served, and the peer then waits for the refill). A blob service charging one token per MiB bounds
each peer's bandwidth, whatever the blob sizes.

Owns the bookkeeping only (thread-safe, bounded: peers idle long enough to have a full bucket and
nothing in progress are forgotten, so a stranger cycling identities cannot grow it without bound
beyond ``max_peers``). Which protocol applies it, and what a refused request is told, is the
service's business (``node.p2p.blobs``).
"""

from __future__ import annotations

import threading
import time


class PeerLimiter:
    def __init__(self, rate: float, burst: int, concurrent: int, max_peers: int = 4096) -> None:
        self.rate, self.burst, self.concurrent, self.max_peers = rate, burst, concurrent, max_peers
        self._tokens: dict[str, tuple[float, float]] = {}   # peer -> (tokens, at)
        self._busy: dict[str, int] = {}
        self._lock = threading.Lock()
        self.refused = 0

    def acquire(self, peer: str) -> str | None:
        """Start a request for ``peer``: None if allowed (call ``release`` when it ends), else why not."""
        now = time.monotonic()
        with self._lock:
            tokens, at = self._tokens.get(peer, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - at) * self.rate)
            if self._busy.get(peer, 0) >= self.concurrent:
                self.refused += 1
                return f"busy: at most {self.concurrent} requests in progress per peer"
            if tokens < 1.0:
                self.refused += 1
                self._tokens[peer] = (tokens, now)
                return f"rate limited: at most {self.rate:g} units per second per peer"
            if peer not in self._tokens and len(self._tokens) >= self.max_peers:
                self._forget_idle(now)
                if len(self._tokens) >= self.max_peers:
                    self.refused += 1
                    return "busy: too many peers at once"
            self._tokens[peer] = (tokens - 1.0, now)
            self._busy[peer] = self._busy.get(peer, 0) + 1
            return None

    def charge(self, peer: str, cost: float) -> None:
        """Take ``cost`` more tokens from ``peer`` (the answer turned out large); may leave a debt."""
        now = time.monotonic()
        with self._lock:
            tokens, at = self._tokens.get(peer, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - at) * self.rate)
            self._tokens[peer] = (tokens - cost, now)

    def release(self, peer: str) -> None:
        with self._lock:
            n = self._busy.get(peer, 0) - 1
            if n > 0:
                self._busy[peer] = n
            else:
                self._busy.pop(peer, None)

    def _forget_idle(self, now: float) -> None:
        full = self.burst / self.rate if self.rate > 0 else 0.0
        for peer, (_tokens, at) in list(self._tokens.items()):
            if peer not in self._busy and now - at >= full:
                del self._tokens[peer]
