"""The bsns wire format: a fixed, versioned frame header and tensor <-> raw-byte conversion.

Owns the byte layout of everything bsns sends on its own protocols. Written by hand because the frame
is a few fixed fields in front of raw tensor bytes: a schema library (protobuf, msgpack) would add a
copy of the payload or a dependency for 80 bytes of ``struct``.

Frame header (big-endian, 76 bytes + 8 per dimension + meta)::

    magic "BSNS" | version u8 | kind u8 | flags u16 | dtype u8 | orig_dtype u8 | direction u8 | ndim u8
    session u64 | round u32 | step u32 | micro u32 | payload_len u64 | keccak256 32 bytes | meta_len u32
    dims: ndim x u64 | meta: meta_len bytes of JSON (only for a set of named tensors)

``dtype`` is the dtype on the wire (fp16/bf16 to halve activation bytes); ``orig_dtype`` is what the
receiver turns it back into. A set of named tensors (one pipeline message carrying e.g. hidden states and a mask) travels as one
uint8 payload, each tensor at a 64-byte-aligned offset, with ``meta`` listing name, dtypes, shape,
offset and size. ``flags & HAS_HASH`` says the hash field is the keccak-256 of the payload
(always for blobs; optional for tensors, whose integrity the channel's AEAD already guarantees).
Replies on a stream are ``status u8 | body_len u16 | body``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

from node.p2p.errors import WireError

MAGIC = b"BSNS"
VERSION = 1
MAX_NDIM = 8
MAX_META = 64 * 1024
ALIGN = 64
DEFAULT_MAX_FRAME = 1 << 30  # 1 GiB of payload; a node may lower it (pipeline frames: the job's bound)
MAX_DIM = (1 << 31) - 1      # one dimension of a tensor on the wire
MAX_SPAN = 1 << 48           # product of a shape's non-zero dimensions (torch's strides must not overflow)
FLAG_HAS_HASH = 0x1

KIND_TENSOR = 1
KIND_BLOB = 2
KIND_BLOB_REQUEST = 3
KIND_LINK = 4        # ask for a pipeline link on the bulk channel (no payload)
KINDS = {KIND_TENSOR: "tensor", KIND_BLOB: "blob", KIND_BLOB_REQUEST: "blob-request", KIND_LINK: "link"}

DIRECTIONS = {"none": 0, "fwd": 1, "bwd": 2}
DIRECTION_NAMES = {v: k for k, v in DIRECTIONS.items()}

# code -> (name, itemsize); torch dtypes are looked up lazily so importing this module stays cheap
DTYPES = {
    0: ("uint8", 1), 1: ("int8", 1), 2: ("int32", 4), 3: ("int64", 8), 4: ("float16", 2),
    5: ("bfloat16", 2), 6: ("float32", 4), 7: ("float64", 8), 8: ("bool", 1),
}
DTYPE_CODES = {name: code for code, (name, _) in DTYPES.items()}

_FIXED = struct.Struct(">4sBBHBBBBQIIIQ32sI")
HEADER_FIXED_SIZE = _FIXED.size

# reply statuses on /bsns/pipeline/1 and /bsns/adapter/1
ST_INLINE = 1     # go ahead: payload follows on this stream
ST_BULK = 2       # go ahead on the bulk channel: body = port u16 | token 16 | key 32
ST_DROPPED = 3    # stale or duplicate tags: body = reason
ST_REFUSED = 4    # peer not authorised: body = reason
ST_ERROR = 5      # body = one-line error
ST_DONE = 6       # payload received and accepted
ST_NOT_FOUND = 7  # blob not served here
ST_BLOB = 8       # a blob frame header follows, then an ST_INLINE / ST_BULK reply
ST_RETRY = 9      # not now (session not started here, step too far ahead, buffer quota full): body = reason


@dataclass(frozen=True, order=True)
class Tags:
    """Where a pipeline message belongs: session, round, step, micro-batch and direction."""

    session: int
    round: int
    step: int
    micro: int
    direction: str = "fwd"

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise WireError(f"direction must be one of {sorted(DIRECTIONS)}, not {self.direction!r}")
        for name, bits in (("session", 64), ("round", 32), ("step", 32), ("micro", 32)):
            value = getattr(self, name)
            if not isinstance(value, int) or not 0 <= value < (1 << bits):
                raise WireError(f"tag {name} must be an integer in [0, 2^{bits}), not {value!r}")


@dataclass
class Header:
    kind: int
    payload_len: int
    tags: Tags = field(default_factory=lambda: Tags(0, 0, 0, 0, "none"))
    dtype: str = "uint8"
    orig_dtype: str = "uint8"
    shape: tuple[int, ...] = ()
    hash: bytes | None = None
    meta: bytes = b""

    def encode(self) -> bytes:
        if len(self.shape) > MAX_NDIM:
            raise WireError(f"tensor has {len(self.shape)} dimensions; the wire allows {MAX_NDIM}")
        flags = FLAG_HAS_HASH if self.hash is not None else 0
        fixed = _FIXED.pack(
            MAGIC, VERSION, self.kind, flags, DTYPE_CODES[self.dtype], DTYPE_CODES[self.orig_dtype],
            DIRECTIONS[self.tags.direction], len(self.shape), self.tags.session, self.tags.round,
            self.tags.step, self.tags.micro, self.payload_len, self.hash or b"\0" * 32, len(self.meta),
        )
        return fixed + struct.pack(f">{len(self.shape)}Q", *self.shape) + self.meta

    @staticmethod
    def tail_len(fixed: bytes) -> int:
        """Bytes that follow a fixed header (dims and meta), bounded so a hostile value cannot balloon."""
        ndim = min(fixed[11], MAX_NDIM + 1)
        meta = min(struct.unpack_from(">I", fixed, HEADER_FIXED_SIZE - 4)[0], MAX_META + 1)
        return 8 * ndim + meta

    @classmethod
    def decode(cls, data: bytes, max_frame: int = DEFAULT_MAX_FRAME) -> "Header":
        if len(data) < HEADER_FIXED_SIZE:
            raise WireError(f"frame header truncated: {len(data)} of {HEADER_FIXED_SIZE} bytes")
        (magic, version, kind, flags, dt, odt, direction, ndim, session, rnd, step, micro, plen,
         digest, meta_len) = _FIXED.unpack_from(data)
        if magic != MAGIC:
            raise WireError(f"bad frame magic {magic!r}: not a bsns peer")
        if version != VERSION:
            raise WireError(f"unsupported wire version {version} (this node speaks {VERSION})")
        if kind not in KINDS:
            raise WireError(f"unknown frame kind {kind}")
        if dt not in DTYPES or odt not in DTYPES:
            raise WireError(f"unknown dtype code {dt if dt not in DTYPES else odt}")
        if direction not in DIRECTION_NAMES:
            raise WireError(f"unknown direction code {direction}")
        if ndim > MAX_NDIM:
            raise WireError(f"frame declares {ndim} dimensions; the wire allows {MAX_NDIM}")
        if plen > max_frame:
            raise WireError(f"frame payload of {plen} bytes exceeds the {max_frame}-byte limit")
        if meta_len > MAX_META:
            raise WireError(f"frame meta of {meta_len} bytes exceeds the {MAX_META}-byte limit")
        if len(data) != HEADER_FIXED_SIZE + 8 * ndim + meta_len:
            raise WireError("frame header length does not match its dimension and meta counts")
        shape = struct.unpack_from(f">{ndim}Q", data, HEADER_FIXED_SIZE)
        _check_shape(shape)
        meta = bytes(data[HEADER_FIXED_SIZE + 8 * ndim:])
        header = cls(kind=kind, payload_len=plen,
                     tags=Tags(session, rnd, step, micro, DIRECTION_NAMES[direction]),
                     dtype=DTYPES[dt][0], orig_dtype=DTYPES[odt][0], shape=tuple(shape),
                     hash=digest if flags & FLAG_HAS_HASH else None, meta=meta)
        if meta:
            header.entries()  # validates the manifest against the payload
        elif kind == KIND_TENSOR:
            numel = 1
            for d in shape:
                numel *= d
            if numel * DTYPES[dt][1] != plen:
                raise WireError(f"payload length {plen} does not match shape {tuple(shape)} of {DTYPES[dt][0]}")
        return header

    def entries(self) -> list[dict]:
        """The manifest of a tensor set: name, dtype, orig_dtype, shape, offset, nbytes per tensor."""
        import json

        try:
            items = json.loads(self.meta)
            out = []
            for it in items:
                e = {"name": str(it["name"]), "dtype": it["dtype"], "orig_dtype": it["orig_dtype"],
                     "shape": tuple(int(d) for d in it["shape"]), "offset": int(it["offset"]),
                     "nbytes": int(it["nbytes"])}
                if not isinstance(e["dtype"], str) or not isinstance(e["orig_dtype"], str) \
                        or e["dtype"] not in DTYPE_CODES or e["orig_dtype"] not in DTYPE_CODES:
                    raise ValueError(f"unknown dtype {e['dtype']!r}")
                if len(e["shape"]) > MAX_NDIM:
                    raise ValueError(f"entry {e['name']} has {len(e['shape'])} dimensions")
                _check_shape(e["shape"])
                numel = 1
                for d in e["shape"]:
                    numel *= d
                if (numel * DTYPES[DTYPE_CODES[e["dtype"]]][1] != e["nbytes"] or e["offset"] % ALIGN
                        or e["offset"] < 0 or e["offset"] + e["nbytes"] > self.payload_len):
                    raise ValueError(f"entry {e['name']} does not fit the payload")
                out.append(e)
        except (ValueError, KeyError, TypeError, WireError) as exc:
            raise WireError(f"bad tensor-set manifest: {exc}") from None
        return out


def _check_shape(shape: tuple[int, ...]) -> None:
    """Dimensions a tensor can have: torch refuses (with its own errors) negative ones and shapes whose
    strides overflow, even when they hold no element."""
    span = 1
    for d in shape:
        if not 0 <= d <= MAX_DIM:
            raise WireError(f"tensor dimension {d} outside [0, {MAX_DIM}]")
        span *= max(d, 1)
    if span > MAX_SPAN:
        raise WireError(f"tensor shape {tuple(shape)} is too large")


def encode_reply(status: int, body: bytes = b"") -> bytes:
    if len(body) > 0xFFFF:
        body = body[:0xFFFF]
    return struct.pack(">BH", status, len(body)) + body


def torch_dtype(name: str) -> Any:
    import torch

    return getattr(torch, name)


def tensor_payload(tensor: Any, wire_dtype: str | None = None) -> tuple[Header, memoryview]:
    """Header fields and a zero-copy byte view of a CPU tensor (cast to ``wire_dtype`` first if given)."""
    import torch

    if not isinstance(tensor, torch.Tensor):
        raise WireError(f"expected a torch.Tensor, got {type(tensor).__name__}")
    orig = str(tensor.dtype).removeprefix("torch.")
    if orig not in DTYPE_CODES:
        raise WireError(f"dtype {orig} cannot travel on the wire")
    t = tensor.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    if wire_dtype is not None and wire_dtype != orig:
        if wire_dtype not in ("float16", "bfloat16", "float32"):
            raise WireError(f"wire dtype must be float16, bfloat16 or float32, not {wire_dtype!r}")
        if not t.is_floating_point():
            raise WireError(f"cannot send a {orig} tensor as {wire_dtype}")
        t = t.to(torch_dtype(wire_dtype))
    t = t.contiguous()
    sent = str(t.dtype).removeprefix("torch.")
    raw = t.reshape(-1).view(torch.uint8).numpy() if t.numel() else b""
    header = Header(kind=KIND_TENSOR, payload_len=t.numel() * t.element_size(), dtype=sent,
                    orig_dtype=orig, shape=tuple(t.shape))
    # keep the (possibly converted) tensor alive as long as the view
    return header, memoryview(raw) if len(raw) else memoryview(b"")


def empty_payload(nbytes: int) -> tuple[Any, memoryview]:
    """A fresh uint8 tensor to receive ``nbytes`` into, and its writable memoryview."""
    import torch

    buf = torch.empty(nbytes, dtype=torch.uint8)
    return buf, memoryview(buf.numpy()) if nbytes else memoryview(bytearray())


def payload_to_tensor(buf: Any, header: Header) -> Any:
    """Reinterpret received bytes as the declared dtype/shape and cast back to the sender's dtype."""
    import torch

    t = buf.view(torch_dtype(header.dtype)).reshape(header.shape) if header.payload_len else \
        torch.empty(header.shape, dtype=torch_dtype(header.dtype))
    if header.orig_dtype != header.dtype:
        t = t.to(torch_dtype(header.orig_dtype))
    return t


def tensor_set_payload(tensors: dict[str, Any], wire_dtype: str | None = None) -> tuple[Header, memoryview]:
    """One header and one contiguous payload for a dict of named tensors (copied into place)."""
    import json

    import torch

    if not isinstance(tensors, dict) or not tensors:
        raise WireError("a tensor set must be a non-empty dict of name -> tensor")
    parts, entries, offset = [], [], 0
    for name, tensor in tensors.items():
        header, view = tensor_payload(tensor, wire_dtype)
        entries.append({"name": str(name), "dtype": header.dtype, "orig_dtype": header.orig_dtype,
                        "shape": list(header.shape), "offset": offset, "nbytes": header.payload_len})
        parts.append((offset, view))
        offset += -(-header.payload_len // ALIGN) * ALIGN
    meta = json.dumps(entries, separators=(",", ":")).encode()
    if len(meta) > MAX_META:
        raise WireError(f"tensor set manifest of {len(meta)} bytes exceeds {MAX_META}")
    flat = torch.empty(offset, dtype=torch.uint8)
    out = memoryview(flat.numpy()) if offset else memoryview(bytearray())
    for off, view in parts:
        out[off:off + len(view)] = view
    return Header(kind=KIND_TENSOR, payload_len=offset, meta=meta), out


def payload_to_tensor_set(buf: Any, header: Header) -> dict[str, Any]:
    import torch

    out = {}
    for e in header.entries():
        if e["nbytes"]:
            t = buf[e["offset"]:e["offset"] + e["nbytes"]].view(torch_dtype(e["dtype"])).reshape(e["shape"])
        else:
            t = torch.empty(e["shape"], dtype=torch_dtype(e["dtype"]))
        out[e["name"]] = t.to(torch_dtype(e["orig_dtype"])) if e["orig_dtype"] != e["dtype"] else t
    return out
