"""Test helper: workloads and attacks that run inside a child-process node (``peers.Peer``), and a
stranger process that holds idle sockets. Each attack runs on background threads until ``stop``;
``report`` returns what it saw (refusals by kind), so the test can check each was refused.

Commands (``Peer.call(name, *args)``): ``send_many``/``take_many`` (the legitimate transfer, timed),
``flood`` (a registered non-member: inject tensors into a session, flood tags of one that never
runs), ``hammer`` (a stranger: concurrent blob requests on the open protocol), ``report``, ``stop``,
``rss`` (this process's resident memory), ``refused``/``pending`` (the victim's counters).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections import Counter
from typing import Any

_stop = threading.Event()
_seen: Counter = Counter()
_lock = threading.Lock()


def _note(kind: str) -> None:
    with _lock:
        _seen[kind] += 1


def send_many(node: Any, peer_id: str, session: int, steps: int, micros: int, nbytes: int) -> float:
    """Send ``steps x micros`` fwd tensors of ``nbytes``; seconds taken."""
    import torch

    from node.p2p import Tags

    t = torch.randn(nbytes // 4)
    t0 = time.perf_counter()
    for step in range(steps):
        for micro in range(micros):
            if not node.send_tensor(peer_id, Tags(session, 0, step, micro), t, timeout=60):
                raise RuntimeError(f"step {step} micro {micro} dropped")
    return time.perf_counter() - t0


def take_many(node: Any, session: int, steps: int, micros: int, sender: str) -> float:
    """Take every message ``send_many`` sends, checking each came from ``sender``; seconds taken."""
    from node.p2p import Tags

    t0 = time.perf_counter()
    for step in range(steps):
        for micro in range(micros):
            _, who = node.recv_with_sender(Tags(session, 0, step, micro), timeout=60)
            if who.lower() != sender.lower():
                raise RuntimeError(f"step {step} micro {micro} came from {who}")
    return time.perf_counter() - t0


def flood(node: Any, peer_id: str, sessions: list[int], ghost_session: int) -> None:
    """A registered non-member: inject tensors for the victim's session, flood tags of a ghost session."""
    import torch

    _stop.clear()   # an attack stopped before may be started again (the benchmark alternates)
    from node.p2p import Tags

    small = torch.zeros(1024)

    def inject() -> None:
        i = 0
        while not _stop.is_set():
            try:
                node.send_tensor(peer_id, Tags(sessions[i % len(sessions)], 0, i % 4, i % 4), small, timeout=0.05)
                _note("injected")
            except Exception as exc:
                _note(type(exc).__name__)
            i += 1

    def ghost() -> None:
        i = 0
        while not _stop.is_set():
            try:
                node.send_tensor(peer_id, Tags(ghost_session, 0, i // 1000, i % 1000), small, timeout=0.05)
                _note("ghost taken")
            except Exception as exc:
                _note("ghost " + type(exc).__name__)
            i += 1

    for fn in (inject, ghost):
        threading.Thread(target=fn, daemon=True).start()


def hammer(node: Any, peer_id: str, blob_hash: str, threads: int) -> None:
    """A stranger: ``threads`` loops requesting a large blob on the open protocol, as fast as allowed."""
    _stop.clear()
    def loop() -> None:
        while not _stop.is_set():
            try:
                node.fetch_blob(peer_id, blob_hash, timeout=10)
                _note("blob served")
            except Exception as exc:
                reason = str(exc)
                _note("blob " + ("rate limited" if "rate" in reason else "busy" if "busy" in reason
                                 else type(exc).__name__))
    for _ in range(threads):
        threading.Thread(target=loop, daemon=True).start()


def nice(node: Any) -> None:
    """Run this attacker at the lowest CPU priority: on one shared machine its own CPU would otherwise
    compete with the victim's, which a remote attacker's does not (the victim's cost of serving the
    attack is what is measured)."""
    os.nice(19)


def report(node: Any) -> dict:
    with _lock:
        return dict(_seen)


def stop(node: Any) -> None:
    _stop.set()


def rss(node: Any) -> int:
    import psutil

    return psutil.Process(os.getpid()).memory_info().rss


def counters(node: Any) -> dict:
    return {"refused": node.refused, "busy": node.inbox.busy, "pending": [t.session for t in node.inbox.pending()],
            "evicted": node.bulkport.listener.evicted, "blob_limited": node.blobs.limiter.refused,
            "parked": node.bulkport.listener.parked, "sent_away": node.pipeline.sent_away,
            "turned_away": node.host.gate.turned_away}


def forget(node: Any, session: int) -> None:
    """The session is over (as the daemon does it): a finished run's last step stays held until then."""
    node.forget_session(session)


COMMANDS = {"forget": forget, "send_many": send_many, "take_many": take_many, "flood": flood, "hammer": hammer, "nice": nice,
            "report": report, "stop": stop, "rss": rss, "counters": counters}


def hold_sockets(ports: list[int], per_port: int, seconds: float, out: Any) -> None:
    """A stranger process: keep ``per_port`` idle TCP connections open to each port, reopening any the
    node closes, for ``seconds``; reports how many it opened in all."""
    os.nice(19)   # see ``nice``
    deadline = time.monotonic() + seconds
    held: list[tuple[int, socket.socket]] = []
    opened = 0
    while time.monotonic() < deadline:
        for port in ports:
            while sum(1 for p, _ in held if p == port) < per_port:
                try:
                    held.append((port, socket.create_connection(("127.0.0.1", port), timeout=1)))
                    opened += 1
                except OSError:
                    break
        alive = []
        for port, s in held:   # a socket the node evicted reads as closed
            s.setblocking(False)
            try:
                closed = s.recv(1) == b""
            except BlockingIOError:
                closed = False
            except OSError:
                closed = True
            if closed:
                s.close()
            else:
                alive.append((port, s))
        held = alive
        time.sleep(0.05)
    for _, s in held:
        s.close()
    out.put(opened)
