"""``bsns bench p2p``: tensor throughput over libp2p against a plain TCP socket, in one run.

A receiver runs in its own OS process (spawned) with: a plain TCP server (the baseline), a bsns
``P2PNode`` with the bulk channel disabled (the library as it is: one Noise + yamux stream), and a
``P2PNode`` as shipped (libp2p negotiates and keys the AES-GCM bulk channel). The sender, in this
process, moves fp32 tensors of each size to all three and fetches a blob of that size back
(``/bsns/adapter/1``, keccak-verified), and prints MB/s and the ratio to plain TCP.
"""

from __future__ import annotations

import typer

# anvil's published dev keys 0, 1 and 2: throw-away identities for a local benchmark only
_SENDER_KEY = bytes.fromhex("ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80")
_BULK_KEY = bytes.fromhex("59c6995e998f97a5a0044966f0945389dc9e86e7aa34a4fa5e1e1d3b6c3d6d8e")
_STREAM_KEY = bytes.fromhex("5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a")
_MB = 1 << 20


def _tcp_server(ready, stop) -> None:  # receiver side of the baseline: length-prefixed raw bytes
    import socket
    import threading

    import torch

    srv = socket.create_server(("127.0.0.1", 0))
    ready.put(srv.getsockname()[1])

    def serve(conn: socket.socket) -> None:
        with conn:
            while True:
                head = bytearray(8)
                if conn.recv_into(head, 8, socket.MSG_WAITALL) < 8:
                    return
                n = int.from_bytes(head, "big")
                buf = torch.empty(n, dtype=torch.uint8)
                view = memoryview(buf.numpy())
                got = 0
                while got < n:
                    got += conn.recv_into(view[got:], n - got)
                conn.sendall(b"k")

    srv.settimeout(0.5)
    while not stop.is_set():
        try:
            conn, _ = srv.accept()
        except socket.timeout:
            continue
        threading.Thread(target=serve, args=(conn,), daemon=True).start()
    srv.close()


def _receiver(ready, control, blob_sizes) -> None:
    import threading

    import torch

    from node.p2p import P2PNode, Tags

    torch.set_num_threads(1)
    stop = threading.Event()
    threading.Thread(target=_tcp_server, args=(ready, stop), daemon=True).start()
    allow = lambda addr, proto: True  # noqa: E731 - the benchmark has one known peer
    stream_node = P2PNode(_STREAM_KEY, allow, bulk_channel=False).start()
    bulk_node = P2PNode(_BULK_KEY, allow).start()
    from node.p2p import eth_address_from_private_key

    for node in (stream_node, bulk_node):  # the shipped admission rule: only the sender, only session 1
        node.expect_session(1, 0, {"fwd": eth_address_from_private_key(_SENDER_KEY)}, node.max_frame)
    hashes = {}
    for size in blob_sizes:
        data = torch.randint(0, 255, (size,), dtype=torch.uint8).numpy().tobytes()
        hashes[size] = bulk_node.serve_blob(data)
        stream_node.serve_blob(data)

    def drain(node: P2PNode) -> None:
        i = 0
        while not stop.is_set():
            try:
                node.recv(Tags(1, 0, i, 0), timeout=0.5)
                i += 1
            except Exception:
                continue

    for node in (stream_node, bulk_node):
        threading.Thread(target=drain, args=(node,), daemon=True).start()
    ready.put(((stream_node.peer_id, stream_node.addrs), (bulk_node.peer_id, bulk_node.addrs), hashes))
    control.get()
    stop.set()
    stream_node.close()
    bulk_node.close()


def run_bench(sizes_mb: list[int], reps: int, wire_dtype: str | None) -> list[dict]:
    import gc
    import multiprocessing as mp
    import socket
    import statistics
    import time

    import torch

    from node.p2p import P2PNode, Tags
    from node.hashing import keccak256

    torch.set_num_threads(1)
    sizes = [s * _MB for s in sizes_mb]
    ctx = mp.get_context("spawn")
    ready, control = ctx.Queue(), ctx.Queue()
    proc = ctx.Process(target=_receiver, args=(ready, control, sizes), daemon=True)
    proc.start()
    rows = []
    sender = None
    try:
        port = ready.get(timeout=120)
        (s_pid, s_addrs), (b_pid, b_addrs), hashes = ready.get(timeout=300)
        sender = P2PNode(_SENDER_KEY, lambda a, p: True, timeout=120).start()
        sender.connect(s_pid, s_addrs)
        sender.connect(b_pid, b_addrs)
        tcp = socket.create_connection(("127.0.0.1", port))
        tcp.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        step = {"stream": 0, "bulk": 0}

        def tcp_send(t: torch.Tensor) -> None:
            view = memoryview(t.reshape(-1).view(torch.uint8).numpy())
            tcp.sendall(len(view).to_bytes(8, "big"))
            tcp.sendall(view)
            tcp.recv(1)

        def p2p_send(kind: str, pid: str, t: torch.Tensor) -> None:
            ok = sender.send_tensor(pid, Tags(1, 0, step[kind], 0), t, wire_dtype=wire_dtype)
            step[kind] += 1
            if not ok:
                raise RuntimeError("receiver dropped a benchmark tensor")

        def tcp_keccak(t: torch.Tensor) -> None:  # the floor for a blob: move it, then verify its hash
            tcp_send(t)
            keccak256(memoryview(t.reshape(-1).view(torch.uint8).numpy()))

        # the goal's comparison (tcp vs bulk, tcp+keccak vs bulk blob) is interleaved rep by rep, in
        # alternating order, so load from other processes hits both alike; the library's own stream
        # path is slow and leaves work behind (garbage, window updates), so it runs afterwards
        fast = {
            "tcp": lambda t, h: tcp_send(t),
            "bulk": lambda t, h: p2p_send("bulk", b_pid, t),
            "tcp_keccak": lambda t, h: tcp_keccak(t),
            "bulk_blob": lambda t, h: sender.fetch_blob(b_pid, h),
        }
        slow = {
            "stream": lambda t, h: p2p_send("stream", s_pid, t),
            "stream_blob": lambda t, h: sender.fetch_blob(s_pid, h),
        }
        for size in sizes:
            t = torch.randn(size // 4)
            times: dict[str, list[float]] = {k: [] for k in (*fast, *slow)}
            n = reps * min(4, max(1, 64 // max(1, size // _MB)))  # small transfers are noisier: more reps
            for group in (fast, slow):
                for rep in range(n if group is fast else reps):
                    order = list(group.items())
                    for name, fn in (order if rep % 2 == 0 else order[::-1]):
                        gc.collect()  # outside every timing
                        t0 = time.perf_counter()
                        fn(t, hashes[size])
                        times[name].append(time.perf_counter() - t0)
            res = {"size_mb": size / _MB}
            res.update({k: size / _MB / statistics.median(v) for k, v in times.items()})
            rows.append(res)
        tcp.close()
    finally:
        if sender is not None:
            sender.close()
        control.put("stop")
        proc.join(timeout=60)
        if proc.is_alive():
            proc.kill()
    return rows


def register(bench_app: typer.Typer) -> None:
    @bench_app.command("p2p")
    def bench_p2p(
        sizes: str = typer.Option("4,64,256", help="tensor sizes in MB, comma-separated"),
        reps: int = typer.Option(5, min=1, help="transfers per size and path, 4x that for the fast paths "
                                 "below 16 MB (the median is reported)"),
        wire_dtype: str = typer.Option("", help="send activations as float16/bfloat16 (empty: as they are)"),
    ) -> None:
        """Tensor and blob throughput: plain TCP vs libp2p stream vs the libp2p-keyed bulk channel."""
        import os
        import platform

        from rich.console import Console
        from rich.table import Table

        from node.errors import BsnsError

        try:
            sizes_mb = [int(s) for s in sizes.split(",") if s.strip()]
        except ValueError:
            raise BsnsError(f"--sizes must be comma-separated integers, not {sizes!r}") from None
        if not sizes_mb or min(sizes_mb) <= 0:
            raise BsnsError("--sizes needs at least one positive size")
        rows = run_bench(sizes_mb, reps, wire_dtype or None)
        table = Table(title=f"bsns p2p throughput, MB/s of fp32 tensor (127.0.0.1, {platform.node()}, "
                            f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}, median of >= {reps})")
        for col in ("size MB", "plain TCP", "libp2p stream", "ratio", "bsns bulk", "ratio",
                    "TCP+keccak", "blob via stream", "blob via bulk", "ratio", "vs TCP+keccak"):
            table.add_column(col, justify="right")
        for r in rows:
            table.add_row(f"{r['size_mb']:.0f}", f"{r['tcp']:.0f}", f"{r['stream']:.0f}",
                          f"{r['stream'] / r['tcp']:.2f}", f"{r['bulk']:.0f}", f"{r['bulk'] / r['tcp']:.2f}",
                          f"{r['tcp_keccak']:.0f}", f"{r['stream_blob']:.0f}", f"{r['bulk_blob']:.0f}",
                          f"{r['bulk_blob'] / r['tcp']:.2f}", f"{r['bulk_blob'] / r['tcp_keccak']:.2f}")
        Console(width=160).print(table)
        typer.echo("ratio = figure / plain TCP measured in the same run; tensors go sender -> receiver "
                   "process, blobs come back keccak-verified (TCP+keccak: plain TCP plus that hash).")
