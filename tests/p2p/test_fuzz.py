"""Property-based fuzzing (hypothesis) of every decoder that reads bytes from a peer.

Frames (``wire.Header.decode`` and the stream reader ``framing.read_header``), tensor-set manifests
(``Header.entries`` and the payload they describe), blob headers and replies (``framing.read_reply``),
bulk-channel records and offers (``bulk.recv_records``, ``Link.recv_record``, ``decode_offer``, the
sealed acknowledgement); gossip announcements are decoded by the daemon (tests/daemon/test_gossip_fuzz.py).
Each property:
no exception but the protocol's own (``P2PError`` and its kinds) and a bounded memory peak
(tracemalloc), whatever the bytes. Inputs are both raw bytes and valid encodings with bytes flipped,
so the checks past the magic are reached. The default run takes a few hundred examples per decoder;
the slow tier takes 10,000.
"""

from __future__ import annotations

import json
import socket
import struct

import pytest
from hypothesis import strategies as st

from node.p2p import bulk, framing, wire
from node.p2p.errors import P2PError
from node.p2p.wire import Header, Tags

pytestmark = pytest.mark.timeout(900)

from tests.support.fuzz import EXAMPLES, fuzz as _fuzz, mutated as _mutated


def _corpus() -> list[bytes]:
    """Valid frame headers of every kind, dtype and shape class (seeded): the mutation base."""
    import random

    import torch

    rnd = random.Random(12)
    dtypes = list(wire.DTYPE_CODES)
    out = []
    for i in range(64):
        tags = Tags(rnd.randrange(2**64), rnd.randrange(2**32), rnd.randrange(2**32), rnd.randrange(8),
                    rnd.choice(list(wire.DIRECTIONS)))
        kind = list(wire.KINDS)[i % len(wire.KINDS)]
        if kind == wire.KIND_TENSOR and i % 3 == 0:     # a set of named tensors: a JSON manifest
            tensors = {f"t{k}": torch.zeros([rnd.randrange(4) for _ in range(rnd.randrange(4))])
                       for k in range(1 + rnd.randrange(3))}
            h, _ = wire.tensor_set_payload(tensors)
        elif kind == wire.KIND_TENSOR:
            dt = rnd.choice(dtypes)
            shape = tuple(rnd.randrange(6) for _ in range(rnd.randrange(wire.MAX_NDIM + 1)))
            numel = 1
            for d in shape:
                numel *= d
            h = Header(kind=kind, payload_len=numel * wire.DTYPES[wire.DTYPE_CODES[dt]][1], dtype=dt,
                       orig_dtype=rnd.choice(dtypes), shape=shape)
        else:
            h = Header(kind=kind, payload_len=rnd.randrange(1 << 20), hash=bytes(rnd.randrange(256) for _ in range(32)))
        h.tags = tags
        out.append(h.encode())
    return out


CORPUS = _corpus()
_frames = st.one_of(st.binary(max_size=200), _mutated(CORPUS))


@pytest.mark.parametrize("examples", EXAMPLES)
def test_frame_header_decoder(examples):
    def check(data: bytes) -> None:
        if len(data) >= wire.HEADER_FIXED_SIZE:
            assert wire.Header.tail_len(data) <= 8 * (wire.MAX_NDIM + 1) + wire.MAX_META + 1
        h = Header.decode(data, max_frame=1 << 20)
        assert h.payload_len <= 1 << 20
        if h.meta:
            for e in h.entries():
                assert 0 <= e["offset"] and e["offset"] + e["nbytes"] <= h.payload_len
    _fuzz(examples, _frames, check)


@pytest.mark.parametrize("examples", EXAMPLES)
def test_tensor_payloads_and_manifests_of_any_decoded_header(examples):
    """Whatever header decodes, turning its payload into tensors raises nothing but the protocol's error."""
    import torch

    def check(data: bytes) -> None:
        h = Header.decode(data, max_frame=1 << 16)
        if h.kind != wire.KIND_TENSOR:
            return
        buf = torch.zeros(h.payload_len, dtype=torch.uint8)
        out = wire.payload_to_tensor_set(buf, h) if h.meta else wire.payload_to_tensor(buf, h)
        assert out is not None
    _fuzz(examples, _frames, check)


class _Stream:
    """What ``framing`` reads from: ``read(n)`` returning what a peer sent, in arbitrary chunks."""

    def __init__(self, data: bytes, chunk: int) -> None:
        self.data, self.chunk = data, max(1, chunk)

    async def read(self, n: int) -> bytes:
        out, self.data = self.data[:min(n, self.chunk)], self.data[min(n, self.chunk):]
        return out


@pytest.mark.parametrize("examples", EXAMPLES)
def test_stream_readers_for_frames_blob_headers_and_replies(examples):
    import trio

    replies = [wire.encode_reply(s, b"reason") for s in range(1, 10)] + [wire.encode_reply(wire.ST_BLOB, h)
                                                                         for h in CORPUS[:16]]
    replies.append(wire.encode_reply(wire.ST_BULK, bulk.encode_offer(4000, *bulk.new_secret())))
    inputs = st.tuples(st.one_of(_frames, _mutated(replies)), st.integers(1, 64))

    async def decode(data: bytes, chunk: int) -> None:
        try:
            header = await framing.read_header(_Stream(data, chunk), 1.0, 1 << 20)
            assert header is None or header.payload_len <= 1 << 20
        except P2PError:
            pass
        status, body = await framing.read_reply(_Stream(data, chunk), 1.0)
        if status == wire.ST_BLOB:       # a blob header arrives inside a reply
            Header.decode(body, 1 << 20)
        if status == wire.ST_BULK:
            bulk.decode_offer(body)

    def check(args) -> None:
        trio.from_thread.run(decode, *args)   # one event loop for every example: trio.run costs ~10 ms

    async def main() -> None:
        await trio.to_thread.run_sync(
            lambda: _fuzz(examples, inputs, check, warmup=(wire.encode_reply(wire.ST_BLOB, b"x"), 1)))
    trio.run(main)


@pytest.mark.parametrize("examples", EXAMPLES)
def test_bulk_records_links_offers_and_acks(examples):
    """Bytes on a side socket that do not come from the keyed peer: records fail authentication, a
    length field over the limit is refused before its bytes are read, and nothing else escapes."""
    def check(data: bytes) -> None:
        token, key = bulk.new_secret()
        a, b = socket.socketpair()
        a.settimeout(0.2)
        try:
            b.sendall(data)
            b.shutdown(socket.SHUT_WR)
            if data[:1] and data[0] % 3 == 0:
                bulk.recv_records(a, key, token, memoryview(bytearray(min(len(data), 3 << 20))))
            elif data[:1] and data[0] % 3 == 1:
                link = bulk.Link(a, key, token, dialler=False)
                link.recv_record(limit=1 << 17)
            else:
                bulk.recv_ack(a, key, token)
        except (socket.timeout, TimeoutError) as exc:  # a peer that stops sending: the caller's timeout
            raise P2PError(str(exc)) from None
        finally:
            a.close(), b.close()
        raise AssertionError("bytes without the key were accepted")
    length_prefixed = st.builds(lambda n, rest: bytes([1]) + struct.pack(">I", n) + rest,
                                st.integers(0, 2**32 - 1), st.binary(max_size=64))
    _fuzz(examples, st.one_of(st.binary(min_size=1, max_size=2048), length_prefixed), check)
    for body in (b"", b"\0" * 49, b"\1" * 51):
        with pytest.raises(P2PError):
            bulk.decode_offer(body)
