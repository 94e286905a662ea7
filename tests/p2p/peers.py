"""Test helper: a P2PNode in its own OS process (multiprocessing spawn), driven by commands.

Each command runs the real node API in the child and returns ("ok", value) or ("err", type, message).
A few commands simulate faults from inside the child (a corrupted blob store, a process that dies
mid-transfer) because those cannot be produced from outside a healthy node.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import socket
import threading
from typing import Any

# anvil's published dev keys (public, for local tests only): index -> 32-byte key
DEV_KEYS = [bytes.fromhex(h) for h in (
    "ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
    "59c6995e998f97a5a0044966f0945389dc9e86e7aa34a4fa5e1e1d3b6c3d6d8e",
    "5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
    "7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6",
    "47e179ec197488593b187f80a00eb0da91f1b9d0b13f8733639f19c30a34926a",
    "8b3a350cf5c34c9194ca85829a2df0ec3153be0318b5e2d3348e872092edffba",
)]


def address(i: int) -> str:
    from eth_account import Account

    return Account.from_key(DEV_KEYS[i]).address


def _child(index: int, allowed: list[str] | None, opts: dict, cmds: Any, results: Any) -> None:
    import logging

    import torch

    torch.set_num_threads(1)
    logging.basicConfig(level=logging.ERROR)
    from node.p2p import P2PNode, Tags, bulk
    from node.p2p.admission import OpenAdmission

    from node.p2p import ADAPTER_PROTOCOL

    open_adapter = opts.pop("open_adapter", False)   # /bsns/adapter/1 open to anyone, as the daemon has it
    allow = (lambda a, p: True) if allowed is None else \
        (lambda a, p: a in allowed or (open_adapter and p == ADAPTER_PROTOCOL))
    if opts.pop("open", True):  # tests of transfers themselves; the hostile-peer tests run the session rule
        opts["admission"] = OpenAdmission()
    node = P2PNode(DEV_KEYS[index], allow, timeout=10, **opts).start()
    results.put(("ok", (node.peer_id, node.addrs, node.eth_address)))
    gossip: list = []
    while True:
        cmd, *args = cmds.get()
        try:
            if cmd == "connect":
                value = node.connect(*args)
            elif cmd == "add_peer":
                value = node.add_peer(*args)
            elif cmd == "send":
                pid, tags, tensor = args
                value = node.send_tensor(pid, Tags(*tags), tensor)
            elif cmd == "send_bf16":
                pid, tags, tensor = args
                value = node.send_tensor(pid, Tags(*tags), tensor, wire_dtype="bfloat16")
            elif cmd == "recv":
                tags, timeout = args
                value = node.recv_with_sender(Tags(*tags), timeout)
            elif cmd == "expect":   # session, round, {direction: address}, max_frame[, micro_batches]
                value = node.expect_session(*args)
            elif cmd == "serve":
                value = node.serve_blob(args[0])
            elif cmd == "serve_corrupt":  # a store whose bytes no longer match their hash
                digest, data = args
                node.store._blobs[bytes.fromhex(digest[2:])] = data
                value = digest
            elif cmd == "fetch":
                value = node.fetch_blob(*args)
            elif cmd == "announce":
                value = node.announce_blob(args[0])
            elif cmd == "providers":
                value = node.find_providers(args[0])
            elif cmd == "bulk_port":
                value = node.bulkport.listener.port
            elif cmd == "stats":
                value = {"refused": node.refused, "dropped": node.inbox.dropped,
                         "pending": node.inbox.pending(), "connected": node.connected_peers()}
            elif cmd == "subscribe":
                node.subscribe(args[0], lambda sender, data: gossip.append((sender, data)))
                value = None
            elif cmd == "publish":
                value = node.publish(*args)
            elif cmd == "gossip":
                value = list(gossip)
            elif cmd == "topic_peers":
                value = node.topic_peers(args[0])
            elif cmd == "die_during_send":
                # the process is killed after part of the payload went out (bulk or inline path)
                pid, tags, tensor, path = args
                if path == "link":
                    real_payload = bulk.Link.send_payload

                    def dying_payload(self, data):
                        real_payload(self, data[: bulk.RECORD * 2])
                        os._exit(9)

                    bulk.Link.send_payload = dying_payload
                elif path == "bulk":
                    real = bulk.send_records

                    def dying(sock, key, token, data, on_record=None):
                        real(sock, key, token, data[: bulk.RECORD * 2])
                        os._exit(9)

                    bulk.send_records = dying
                else:
                    real_write = node.host.write
                    calls = {"n": 0}

                    async def dying_write(stream, data, timeout):
                        calls["n"] += 1
                        if calls["n"] == 3:  # header, then one payload chunk, then die
                            os._exit(9)
                        await real_write(stream, data, timeout)

                    node.host.write = dying_write
                value = node.send_tensor(pid, Tags(*tags), tensor)
            elif cmd == "close":
                import psutil

                node.close()
                value = [str(c) for c in psutil.Process().net_connections("tcp")]
                results.put(("ok", value))
                return
            else:
                from tests.p2p import hostile   # workloads and attacks (test_hostile_peers.py)

                if cmd not in hostile.COMMANDS:
                    raise ValueError(f"unknown command {cmd}")
                value = hostile.COMMANDS[cmd](node, *args)
            results.put(("ok", value))
        except Exception as exc:
            results.put(("err", type(exc).__name__, str(exc)))


class Peer:
    """Handle on a child-process node: ``call(cmd, *args)`` returns the value or raises RemoteError."""

    def __init__(self, index: int, allowed: list[str] | None = None, **opts: Any) -> None:
        ctx = mp.get_context("spawn")
        self.index = index
        self.cmds, self.results = ctx.Queue(), ctx.Queue()
        self.proc = ctx.Process(target=_child, args=(index, allowed, opts, self.cmds, self.results), daemon=True)
        self.proc.start()

    def wait_ready(self, timeout: float = 90) -> "Peer":
        _, (self.peer_id, self.addrs, self.address) = self.results.get(timeout=timeout)
        return self

    def call(self, cmd: str, *args: Any, timeout: float = 60) -> Any:
        self.cmds.put((cmd, *args))
        res = self.results.get(timeout=timeout)
        if res[0] == "err":
            raise RemoteError(res[1], res[2])
        return res[1]

    def stop(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(timeout=10)


class RemoteError(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind, self.message = kind, message


class CorruptingProxy:
    """A TCP relay in front of a bulk port that can flip one byte of the next connection's payload."""

    def __init__(self) -> None:
        self.srv = socket.create_server(("127.0.0.1", 0))
        self.port = self.srv.getsockname()[1]
        self.target: int | None = None
        self.corrupt_next = False
        self.srv.settimeout(0.2)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        threading.Thread(target=self._loop, daemon=True).start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self.srv.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            corrupt, self.corrupt_next = self.corrupt_next, False
            upstream = socket.create_connection(("127.0.0.1", self.target))
            for a, b, flip in ((client, upstream, corrupt), (upstream, client, False)):
                t = threading.Thread(target=self._pipe, args=(a, b, flip), daemon=True)
                t.start()
                self._threads.append(t)

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket, flip: bool) -> None:
        seen = 0
        try:
            while True:
                data = src.recv(1 << 16)
                if not data:
                    break
                if flip and seen <= 5000 < seen + len(data):  # past the token, inside record 0
                    data = bytearray(data)
                    data[5000 - seen] ^= 0x01
                seen += len(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()

    def close(self) -> None:
        self._stop.set()
        self.srv.close()
