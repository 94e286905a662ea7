"""A finished (or failed) session gives back what its runner held: the daemon keeps no reference to it, so its
model, optimizer state and data are freed (idle memory over consecutive sessions: scripts/bench_memory.py)."""

from __future__ import annotations

import gc
import weakref
from types import SimpleNamespace

import pytest

from node.daemon import session as session_mod
from node.daemon.daemon import Daemon
from tests.daemon.specs import sst2_spec


class _HeavyRunner:
    """Stands in for SessionRunner: holds a large buffer the way a runner holds its model and optimizer."""
    made: list = []

    def __init__(self, *args, **kwargs):
        self.weights = bytearray(64 * 1024 * 1024)
        _HeavyRunner.made.append(weakref.ref(self))

    def run(self):
        return None


def _daemon(published: list, ended: list | None = None):
    ended = [] if ended is None else ended
    d = Daemon(SimpleNamespace())
    d.address = "0x" + "11" * 20
    d.p2p = SimpleNamespace(peer_id="peer")
    d.cfg = SimpleNamespace(p2p=SimpleNamespace(announce="/ip4/127.0.0.1/tcp/1"), timing=SimpleNamespace(
        pipeline_timeout_s=1.0, sync_timeout_s=1.0), device=lambda: "cpu")
    d.net = SimpleNamespace(join_topic=lambda sid: None, ensure_connected=lambda members: None,
                            end_session=lambda sid: ended.append(sid))
    d.chain_port = SimpleNamespace(members=lambda sid: [])
    d.publisher = SimpleNamespace(publish=lambda sid, spec, shard, replica, runner: published.append(sid))
    d.store = SimpleNamespace(upsert_session=lambda sid, **kw: None)
    d.sessions = SimpleNamespace(assignment_of=lambda sid, addr: SimpleNamespace(released=True))  # stake already back
    return d


def test_a_finished_session_leaves_no_runner_behind(monkeypatch):
    monkeypatch.setattr(session_mod, "SessionRunner", _HeavyRunner)
    published: list = []
    ended: list = []
    d = _daemon(published, ended)
    spec = sst2_spec("release", method="houlsby", config={"bottleneck_size": 8}, layers=[[0, 6]], memory_mb=[1024],
                     training={"rounds": 1, "sync_interval": 1, "batch_size": 2, "learning_rate": 0.001})
    for sid in (1, 2, 3):
        d._run_session(sid, spec, 0, 0, 1)
    gc.collect()
    assert published == [1, 2, 3]
    assert ended == [1, 2, 3]        # each session's pipeline messages are refused from then on (forget_session)
    assert d._runners == {}
    assert [r() for r in _HeavyRunner.made] == [None, None, None]


def test_a_failed_publish_still_releases_the_runner(monkeypatch):
    monkeypatch.setattr(session_mod, "SessionRunner", _HeavyRunner)
    d = _daemon([])

    def boom(*a):
        raise RuntimeError("chain went away")
    d.publisher = SimpleNamespace(publish=boom)
    ended: list = []
    d.net.end_session = ended.append
    spec = sst2_spec("release", method="houlsby", config={"bottleneck_size": 8}, layers=[[0, 6]], memory_mb=[1024],
                     training={"rounds": 1, "sync_interval": 1, "batch_size": 2, "learning_rate": 0.001})
    _HeavyRunner.made.clear()
    with pytest.raises(RuntimeError):
        d._run_session(4, spec, 0, 0, 1)
    gc.collect()
    assert d._runners == {} and _HeavyRunner.made[0]() is None and ended == [4]
