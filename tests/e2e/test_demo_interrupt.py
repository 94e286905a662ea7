"""`bsns demo` stops every process it started when interrupted with Ctrl-C (SIGINT) or SIGTERM."""

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
