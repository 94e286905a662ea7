"""`bsns demo` as a user runs it: at a small size it completes and its summary (accuracy before and after, bytes
per node, transactions and gas, time per round, the loss picture) is whole and consistent; interrupted with
Ctrl-C (SIGINT) or SIGTERM, it stops every process it started."""

import json
import shutil
import signal
import subprocess
import sys
import time

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.anvil]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_demo_leaves_no_process(tmp_path, sig):
    psutil = pytest.importorskip("psutil")
    if shutil.which("node") is None:
        pytest.skip("node.js is not installed")
    demo = subprocess.Popen([sys.executable, "-m", "coordinator.cli", "demo", "--workdir", str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 180
        started = []
        while time.monotonic() < deadline:
            started = [p for p in range(4) if (tmp_path / f"node{p}" / "daemon.log").exists()
                       and "started" in (tmp_path / f"node{p}" / "daemon.log").read_text()]
            if len(started) == 4:
                break
            assert demo.poll() is None, "the demo exited early"
            time.sleep(0.5)
        assert len(started) == 4
        children = psutil.Process(demo.pid).children(recursive=True)
        names = " ".join(" ".join(c.cmdline()) for c in children)
        assert "anvil" in names and names.count("node run") == 4
        demo.send_signal(sig)
        demo.wait(timeout=60)
        time.sleep(1)
        alive = [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
        assert alive == []
    finally:
        if demo.poll() is None:
            demo.kill()


def test_small_demo_reports_a_whole_summary(tmp_path):
    from PIL import Image

    if shutil.which("node") is None:
        pytest.skip("node.js is not installed")
    rounds, interval = 3, 4
    res = subprocess.run([sys.executable, "-m", "coordinator.cli", "demo", "--workdir", str(tmp_path),
                          "--rounds", str(rounds), "--sync-interval", str(interval), "--batch-size", "8",
                          "--max-seq-len", "16"], capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    s = json.loads((tmp_path / "summary.json").read_text())
    assert 0 < s["accuracy_before"] < 1 and 0 < s["accuracy_after"] < 1 and s["val_examples"] == 872
    assert f"before {100 * s['accuracy_before']:.1f}%  ->  after {100 * s['accuracy_after']:.1f}%" in res.stdout
    assert len(s["nodes"]) == 4 and {(n["shard"], n["replica"]) for n in s["nodes"]} == {(0, 0), (0, 1), (1, 0), (1, 1)}
    for n in s["nodes"]:
        assert n["bytes_sent"] > 0 and n["bytes_recv"] > 0 and 0 < n["sync_bytes_per_round"] < n["bytes_sent"]
        assert n["gas"] > 0 and n["txs"] >= rounds and n["adapter_bytes"] > 0
    assert s["node_gas"] == sum(n["gas"] for n in s["nodes"]) and s["deploy_and_propose_gas"] > 0
    assert len(s["round_seconds"]) == rounds and all(t > 0 for t in s["round_seconds"])
    assert sorted(s["losses"]) == ["replica 0", "replica 1"]
    assert all(len(v) == rounds * interval for v in s["losses"].values())
    with Image.open(s["loss_png"]) as png:
        assert png.format == "PNG" and png.size == (700, 400)
