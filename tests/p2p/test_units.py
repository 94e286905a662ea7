"""In-process checks of the p2p building blocks: identity, wire format, inbox rules, bulk records."""

from __future__ import annotations

import socket
import threading

import pytest
import torch

from node.p2p import bulk, wire
from node.p2p.errors import IntegrityError, P2PError, PeerUnavailable, WireError
from node.p2p.identity import (eth_address_from_peer_id, eth_address_from_private_key,
                               peer_id_from_private_key)
from node.p2p.inbox import Inbox, RecvTimeout
from node.hashing import keccak256
from node.p2p.store import parse_hash
from node.p2p.wire import Header, Tags
from tests.p2p.peers import DEV_KEYS


def test_peer_id_maps_back_to_the_ethereum_account():
    from eth_account import Account

    for key in DEV_KEYS[:3]:
        pid = peer_id_from_private_key(key)
        assert eth_address_from_peer_id(pid) == Account.from_key(key).address
        # the NodeRegistry stores the binary multihash (base58-decoded id)
        import base58

        assert eth_address_from_peer_id(base58.b58decode(pid)) == Account.from_key(key).address
        assert eth_address_from_private_key(key) == Account.from_key(key).address
    assert len({peer_id_from_private_key(k) for k in DEV_KEYS}) == len(DEV_KEYS)


def test_bad_keys_and_foreign_peer_ids_are_clear_errors():
    with pytest.raises(P2PError, match="32 bytes"):
        peer_id_from_private_key(b"short")
    with pytest.raises(P2PError, match="invalid secp256k1"):
        peer_id_from_private_key(b"\0" * 32)
    from libp2p.crypto.ed25519 import create_new_key_pair
    from libp2p.peer.id import ID

    ed = ID.from_pubkey(create_new_key_pair().public_key).to_base58()
    with pytest.raises(P2PError, match="secp256k1"):
        eth_address_from_peer_id(ed)
    with pytest.raises(P2PError, match="not a peer id"):
        eth_address_from_peer_id("0OIl")


def test_header_round_trip_and_rejections():
    h = Header(kind=wire.KIND_TENSOR, payload_len=2 * 3 * 4 * 2, tags=Tags(5, 1, 2, 3, "bwd"),
               dtype="bfloat16", orig_dtype="float32", shape=(2, 3, 4), hash=keccak256(b"x"))
    raw = h.encode()
    back = Header.decode(raw)
    assert back.tags == h.tags and back.shape == (2, 3, 4) and back.hash == h.hash
    assert back.dtype == "bfloat16" and back.orig_dtype == "float32"
    with pytest.raises(WireError, match="magic"):
        Header.decode(b"XXXX" + raw[4:])
    with pytest.raises(WireError, match="version"):
        Header.decode(raw[:4] + bytes([9]) + raw[5:])
    with pytest.raises(WireError, match="exceeds"):
        Header.decode(raw, max_frame=10)
    bad_len = Header(kind=wire.KIND_TENSOR, payload_len=7, shape=(2, 3), dtype="float32").encode()
    with pytest.raises(WireError, match="does not match shape"):
        Header.decode(bad_len)
    with pytest.raises(WireError, match="truncated"):
        Header.decode(raw[:10])
    with pytest.raises(WireError, match="direction"):
        Tags(1, 0, 0, 0, "sideways")
    with pytest.raises(WireError, match="step"):
        Tags(1, 0, -1, 0)


def test_tensor_payloads_round_trip_including_half_precision_and_sets():
    x = torch.randn(3, 5)
    h, view = wire.tensor_payload(x, "float16")
    assert h.payload_len == 3 * 5 * 2 and len(view) == h.payload_len
    buf, out = wire.empty_payload(h.payload_len)
    out[:] = view
    y = wire.payload_to_tensor(buf, Header.decode(h.encode()))
    assert y.dtype == torch.float32 and torch.equal(y, x.half().float())
    tensors = {"hidden": torch.randn(2, 3), "mask": torch.ones(2, 3, dtype=torch.int64),
               "empty": torch.empty(0, 4), "loss": torch.tensor(1.5)}
    h, view = wire.tensor_set_payload(tensors)
    decoded = Header.decode(h.encode())
    buf, out = wire.empty_payload(decoded.payload_len)
    out[:] = view
    got = wire.payload_to_tensor_set(buf, decoded)
    assert set(got) == set(tensors)
    for k, v in tensors.items():
        assert got[k].dtype == v.dtype and torch.equal(got[k], v)
    bogus = Header(kind=wire.KIND_TENSOR, payload_len=8, meta=b'[{"name":"a","dtype":"float32",'
                   b'"orig_dtype":"float32","shape":[4],"offset":0,"nbytes":16}]')
    with pytest.raises(WireError, match="manifest"):
        Header.decode(bogus.encode())
    with pytest.raises(WireError, match="dtype"):
        wire.tensor_payload(torch.zeros(2, dtype=torch.complex64))


def test_inbox_drops_stale_and_duplicate_and_frees_aborted():
    inbox = Inbox()
    t0 = Tags(1, 0, 0, 0)
    assert inbox.admit(t0) is None
    assert "duplicate" in inbox.admit(t0).reason
    inbox.abort(t0)                     # the transfer failed: a resend is welcome
    assert inbox.admit(t0) is None
    inbox.deliver(t0, "m0", "0xA")
    assert inbox.admit(Tags(1, 0, 1, 0)) is None
    inbox.deliver(Tags(1, 0, 1, 0), "m1", "0xA")
    assert inbox.take(Tags(1, 0, 1, 0), 1) == ("m1", "0xA")   # step 1 consumed: step 0 is now stale
    assert "stale" in inbox.admit(Tags(1, 0, 0, 5)).reason
    with pytest.raises(P2PError, match="older"):
        inbox.take(t0, 1)
    assert inbox.admit(Tags(1, 0, 0, 5, "bwd")) is None       # other direction, own watermark
    assert inbox.admit(Tags(2, 0, 0, 0)) is None              # other session, own watermark
    with pytest.raises(RecvTimeout):
        inbox.take(Tags(3, 0, 0, 0), 0.05)
    late = Tags(1, 0, 1, 1)
    assert inbox.admit(late) is None
    inbox.advance(1, "fwd", 1, 0)
    inbox.advance(1, "fwd", 2, 0)                             # a new round: step 1 of round 0 is stale
    inbox.deliver(late, "late", "0xA")
    assert late not in inbox.pending()
    inbox.reset(1)                                            # a retried round starts afresh
    assert inbox.admit(t0) is None and inbox.admit(Tags(1, 0, 1, 0)) is None
    assert "duplicate" in inbox.admit(Tags(2, 0, 0, 0)).reason  # other sessions keep their state


def _pair():
    a, b = socket.socketpair()
    a.settimeout(5)
    b.settimeout(5)
    return a, b


def test_bulk_records_round_trip_and_detect_tampering():
    data = memoryview(torch.randint(0, 255, (bulk.RECORD * 2 + 1234,), dtype=torch.uint8).numpy().tobytes())
    token, key = bulk.new_secret()
    for tamper in (None, "flip", "wrong_key", "truncate"):
        a, b = _pair()
        out = bytearray(len(data))
        err = []

        def rx():
            try:
                bulk.recv_records(b, key, token, memoryview(out))
            except Exception as exc:
                err.append(exc)
                b.shutdown(socket.SHUT_RDWR)   # as the node does: stop reading, drop the socket

        t = threading.Thread(target=rx)
        t.start()
        if tamper is None:
            bulk.send_records(a, key, token, data)
        elif tamper == "wrong_key":
            try:   # the receiver hangs up after the first record
                bulk.send_records(a, bulk.new_secret()[1], token, data)
            except OSError:
                pass
        else:
            raw = bytearray()

            class Capture:
                def sendall(self, chunk):
                    raw.extend(chunk)

            bulk.send_records(Capture(), key, token, data)
            if tamper == "flip":
                raw[bulk.RECORD + bulk.TAG + 77] ^= 0x40   # inside record 1
                try:
                    a.sendall(raw)
                except OSError:
                    pass
            else:
                a.sendall(raw[: len(raw) // 2])
        a.close()
        t.join(10)
        b.close()
        if tamper is None:
            assert not err and bytes(out) == bytes(data)
        elif tamper == "truncate":
            assert isinstance(err[0], PeerUnavailable)
        else:
            assert isinstance(err[0], IntegrityError), err
            assert ("record 1" if tamper == "flip" else "record 0") in str(err[0])


def test_bulk_listener_matches_tokens_and_expires():
    listener = bulk.BulkListener()
    try:
        token, _ = bulk.new_secret()
        pending = listener.expect(token, 5)
        stranger = bulk.dial("127.0.0.1", listener.port, b"x" * bulk.TOKEN_LEN, 5)
        friend = bulk.dial("127.0.0.1", listener.port, token, 5)
        sock = listener.take(token, pending, 5)
        friend.sendall(b"hello")
        assert sock.recv(5) == b"hello"
        assert stranger.recv(1) == b""          # the unknown token was hung up on
        listener.release(sock)
        for s in (friend, stranger):
            s.close()
        late, _ = bulk.new_secret()
        with pytest.raises(PeerUnavailable, match="in time"):
            listener.take(late, listener.expect(late, 0.1), 0.3)
    finally:
        listener.close()


def test_hash_parsing():
    assert parse_hash("0x" + "ab" * 32) == bytes.fromhex("ab" * 32)
    with pytest.raises(P2PError, match="32 bytes"):
        parse_hash("0xabcd")
    with pytest.raises(P2PError, match="hex"):
        parse_hash("0xzz")


def test_only_noise_and_yamux_are_spoken():
    """A host that offers plaintext security, or mplex, cannot open a connection to a bsns node."""
    import multiaddr
    import trio
    from libp2p import new_host
    from libp2p.stream_muxer.mplex.mplex import MPLEX_PROTOCOL_ID, Mplex
    from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
    from libp2p.stream_muxer.yamux.yamux import Yamux
    from libp2p.crypto.secp256k1 import create_new_key_pair
    from libp2p.peer.id import ID
    from libp2p.peer.peerinfo import PeerInfo
    from libp2p.security.insecure.transport import PLAINTEXT_PROTOCOL_ID, InsecureTransport

    from node.p2p import P2PNode

    node = P2PNode(DEV_KEYS[0], lambda a, p: True, timeout=5).start()
    try:
        def attempt(sec: str, muxer: str) -> bool:
            async def main() -> bool:
                kp = create_new_key_pair(DEV_KEYS[1])
                if sec == "plaintext":
                    sec_opt = {PLAINTEXT_PROTOCOL_ID: InsecureTransport(kp)}
                else:
                    from libp2p.crypto.x25519 import create_new_key_pair as x25519
                    from libp2p.security.noise.transport import PROTOCOL_ID, Transport

                    sec_opt = {PROTOCOL_ID: Transport(kp, noise_privkey=x25519().private_key)}
                # one muxer only: the library's create_*_muxer_option() helpers add the other as fallback
                mux = {MPLEX_PROTOCOL_ID: Mplex} if muxer == "mplex" else {YAMUX_PROTOCOL_ID: Yamux}
                host = new_host(key_pair=kp, sec_opt=sec_opt, muxer_opt=mux)
                async with host.run([multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
                    info = PeerInfo(ID.from_base58(node.peer_id), [multiaddr.Multiaddr(node.addrs[0].split("/p2p/")[0])])
                    ok = False
                    with trio.move_on_after(5):
                        try:
                            await host.connect(info)
                            ok = True
                        except Exception:
                            ok = False
                    for pid in list(host.get_network().connections):
                        await host.disconnect(pid)
                    await host.close()
                    return ok
            return trio.run(main)

        assert attempt("noise", "yamux") is True
        assert attempt("plaintext", "yamux") is False
        assert attempt("noise", "mplex") is False
    finally:
        node.close()


def test_link_records_are_sealed_per_direction_and_order():
    a, b = _pair()
    token, key = bulk.new_secret()
    dialler = bulk.Link(a, key, token, dialler=True)
    listener = bulk.Link(b, key, token, dialler=False)
    payload = memoryview(bytes(range(256)) * 9000)             # > 2 records
    dialler.send_record(b"header")
    threading.Thread(target=dialler.send_payload, args=(payload,)).start()
    assert listener.recv_record() == b"header"
    out = bytearray(len(payload))
    listener.recv_payload(memoryview(out))
    assert bytes(out) == bytes(payload)
    listener.send_record(b"verdict")
    assert dialler.recv_record() == b"verdict"

    # a record replayed, or reflected back to its sender, fails authentication
    raw = bytearray()

    class Capture:
        def sendall(self, chunk):
            raw.extend(chunk)

    spy = bulk.Link(Capture(), key, token, dialler=True)
    spy.send_record(b"header")                                  # byte for byte the first record again
    a.sendall(raw)
    with pytest.raises(IntegrityError):                          # replay
        listener.recv_record()
    raw.clear()
    spy._tx = dialler._rx                                       # the counter the dialler expects next,
    spy.send_record(b"verdict")                                 # but sealed in the dialler's direction
    b.sendall(raw)
    with pytest.raises(IntegrityError):                          # reflection
        dialler.recv_record()
    a.close()
    b.close()


def test_a_port_in_use_is_a_clear_error_and_leaks_nothing():
    import psutil

    from node.p2p import P2PNode

    def open_connections():  # sockets other tests of this process left (e.g. web3 keep-alives) are not ours
        return {(c.laddr, c.raddr) for c in psutil.Process().net_connections("tcp") if c.status != psutil.CONN_TIME_WAIT}

    before = open_connections()
    busy = socket.create_server(("127.0.0.1", 0))
    port = busy.getsockname()[1]
    try:
        with pytest.raises(P2PError, match=f"cannot listen on /ip4/127.0.0.1/tcp/{port}"):
            P2PNode(DEV_KEYS[0], lambda a, p: True, listen=f"/ip4/127.0.0.1/tcp/{port}").start(timeout=20)
        with pytest.raises(P2PError, match=f"cannot listen for the bulk channel on 127.0.0.1:{port}"):
            P2PNode(DEV_KEYS[0], lambda a, p: True, bulk_port=port).start(timeout=20)
    finally:
        busy.close()
    assert open_connections() - before == set()


def test_a_disconnect_cancelled_half_way_still_leaves_no_socket_after_close():
    """The library marks a connection closed before closing its socket and ignores later closes: a
    disconnect cancelled in between used to leave an ESTABLISHED socket behind ``close()``."""
    import psutil

    from node.p2p import P2PNode

    a = P2PNode(DEV_KEYS[0], lambda addr, proto: True, timeout=5).start()
    b = P2PNode(DEV_KEYS[1], lambda addr, proto: True, timeout=5).start()
    try:
        a.connect(b.peer_id, b.addrs)
        b_port = int(b.addrs[0].split("/")[4])

        async def cancelled_disconnect() -> None:
            import trio
            from libp2p.peer.id import ID

            with trio.move_on_after(0):  # cancelled at its first checkpoint, as a deadline would
                await a.host.lp2p.disconnect(ID.from_base58(b.peer_id))

        a.host.call(cancelled_disconnect)
        a.close()

        def dialled_to_b():  # a's outgoing socket to b's libp2p port, while b is still up
            return [c for c in psutil.Process().net_connections("tcp")
                    if c.raddr and c.raddr.port == b_port and c.status == psutil.CONN_ESTABLISHED]

        assert dialled_to_b() == []
    finally:
        a.close()
        b.close()
