"""Reading bsns frames and replies off a libp2p stream, in the host's trio thread.

Owns the read side of the stream protocol: exact reads under a deadline, a payload read straight into
its buffer (hashed on the way), the ``status | len | body`` reply and the frame header. Every library
failure becomes a one-line ``PeerUnavailable`` (or ``WireError`` for bytes that are not a bsns frame),
so a service's handler only has ``P2PError`` to deal with. Writing lives on the host, because a write
that times out must disconnect the peer.
"""

from __future__ import annotations

from typing import Any

from node.p2p import wire
from node.p2p.errors import P2PError, PeerUnavailable, WireError
from node.p2p.limits import STREAM_CHUNK


async def read_exactly(stream: Any, n: int, timeout: float, eof_ok: bool = False) -> bytes:
    """Read ``n`` bytes; with ``eof_ok`` a clean end of stream before the first byte returns b''."""
    import trio
    from libp2p.network.stream.exceptions import StreamEOF, StreamReset

    out = bytearray()
    with trio.move_on_after(timeout) as cs:
        try:
            while len(out) < n:
                chunk = await stream.read(n - len(out))
                if not chunk:
                    raise StreamEOF()
                out += chunk
        except (StreamEOF, StreamReset):
            if eof_ok and not out:
                return b""
            raise PeerUnavailable("peer closed the stream mid-message") from None
        except P2PError:
            raise
        except Exception as exc:
            raise PeerUnavailable(f"read failed: {type(exc).__name__}: {exc}") from None
    if cs.cancelled_caught:
        raise PeerUnavailable(f"peer sent nothing for {timeout:g}s")
    return bytes(out)


async def read_into(stream: Any, view: memoryview, timeout: float, hasher: Any = None) -> None:
    """Fill ``view`` from the stream (feeding ``hasher``), or raise ``PeerUnavailable``."""
    import trio
    from libp2p.network.stream.exceptions import StreamEOF, StreamReset

    got = 0
    with trio.move_on_after(timeout) as cs:
        try:
            while got < len(view):
                chunk = await stream.read(min(len(view) - got, STREAM_CHUNK))
                if not chunk:
                    raise PeerUnavailable("peer closed the stream mid-payload")
                view[got:got + len(chunk)] = chunk
                if hasher is not None:
                    hasher.update(chunk)
                got += len(chunk)
        except (StreamEOF, StreamReset):
            raise PeerUnavailable("peer closed the stream mid-payload") from None
        except P2PError:
            raise
        except Exception as exc:
            raise PeerUnavailable(f"read failed: {type(exc).__name__}: {exc}") from None
    if cs.cancelled_caught:
        raise PeerUnavailable(f"payload stalled for {timeout:g}s")


async def read_reply(stream: Any, timeout: float) -> tuple[int, bytes]:
    """The next ``status u8 | body_len u16 | body`` reply."""
    head = await read_exactly(stream, 3, timeout)
    n = int.from_bytes(head[1:3], "big")
    return head[0], await read_exactly(stream, n, timeout) if n else b""


async def read_header(stream: Any, timeout: float, max_frame: int) -> wire.Header | None:
    """The next frame header, or None when the peer ended the stream between messages."""
    fixed = await read_exactly(stream, wire.HEADER_FIXED_SIZE, timeout, eof_ok=True)
    if not fixed:
        return None
    if fixed[:4] != wire.MAGIC:
        raise WireError(f"bad frame magic {fixed[:4]!r}: not a bsns peer")
    tail_len = wire.Header.tail_len(fixed)
    tail = await read_exactly(stream, tail_len, timeout) if tail_len else b""
    return wire.Header.decode(fixed + tail, max_frame)


async def end_stream(stream: Any, how: str) -> None:
    """``stream.reset()`` or ``stream.close()``, bounded in time and never raising: called on paths that
    are already failing or finishing, where a second error would hide the first."""
    import trio

    with trio.move_on_after(2):
        try:
            await getattr(stream, how)()
        except Exception:
            pass


def remote_ip(stream: Any) -> str:
    """The IP the stream's connection comes from: where the peer's bulk port is dialled."""
    try:
        ip = stream.get_remote_address()[0]
    except Exception:
        ip = None
    return ip or "127.0.0.1"

