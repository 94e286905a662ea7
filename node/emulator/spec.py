"""The emulators of a FedPEAT job spec, and their wire form.

``emulator_for_spec(spec, retention)`` builds, from a ``JobSpec`` with a ``[fedpeat]`` table, the one emulator
every process agrees on for that retention: the whole model as one ``node.model`` shard (the task head drawn
with ``head_seed = training.seed``), layer-dropped with the spec's ``k`` and ``rule`` (importance calibration
batches and distillation text come from the spec's data under fixed seeds; distillation's dropout is seeded;
both run in one CPU thread), so the same spec and retention give the same ``Emulator.hash()`` in any process
on the same torch build and CPU kind.

The wire form is what the hash is computed over: ``emulator_blob(emu)`` = the canonical safetensors bytes of
the weights followed by the manifest's canonical JSON, so ``keccak256(blob) == emu.hash()`` and a blob fetched
by hash verifies like an adapter. ``emulator_from_blob`` rebuilds the emulator from the blob and the model's
architecture (its config) alone: a device that receives an emulator never reads the base model's weights.
Splitting the blob at the end of the safetensors payload and building an empty shard skeleton is the part no
library does; it is written here.

Adapters of a FedPEAT job sit on the adapter-bearing layers only (first and last ``k``) for every emulator and
for the full model (``node.train.build.adapt``), with global layer names, so one adapter state fits all of them.
"""

from __future__ import annotations

import json
import struct
from contextlib import contextmanager

from node.emulator.build import Emulator, EmulatorError, EmulatorManifest, build_emulator, canonical_weight_bytes, \
    emulator_hash
from node.hashing import keccak_hex
from node.train.build import build_data, layer_seed, load_full_model

# Fixed seed offsets: calibration and distillation draw their batches apart from training's batches.
CALIBRATION_SEED_OFFSET = 104_729
DISTILL_SEED_OFFSET = 7_919
CALIBRATION_BATCHES = 4
DISTILL_LR = 1e-4


def _data_batches(spec, seed_offset: int, count: int, labels: bool):
    from node.train.data import batch_indices

    data = build_data(spec)
    bs = spec.training.batch_size
    for idx in batch_indices(len(data.train), bs, spec.training.seed + seed_offset, count):
        b = data.train.collate(idx)
        if not labels:
            b.pop("labels")
        yield b


@contextmanager
def _one_thread():
    """Float reductions (importance scores, distillation) in one CPU thread: the result, and so the emulator's
    hash, must not depend on how many threads the process happens to use (it does otherwise, measured)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def emulator_for_spec(spec, retention: float, base=None) -> Emulator:
    """The spec's emulator at ``retention`` (``base``: the spec's full model from ``load_full_model``, reused
    and left untouched; loaded here when None)."""
    import torch

    if getattr(spec, "fedpeat", None) is None:
        raise EmulatorError(f"job {spec.name!r} has no [fedpeat] table: it is not tuned on emulators")
    fp = spec.fedpeat
    retention = float(retention)
    if retention not in fp.options:
        raise EmulatorError(f"retention {retention} is not one of the spec's fedpeat.options {fp.options}")
    base = load_full_model(spec) if base is None else base
    calibration = None
    if fp.rule == "importance":
        calibration = list(_data_batches(spec, CALIBRATION_SEED_OFFSET, CALIBRATION_BATCHES, labels=True))
    with _one_thread():
        emu = build_emulator(base, retention=retention, k=fp.k, rule=fp.rule, calibration=calibration,
                             base_model=spec.model.id)
        if fp.distill_steps and emu.manifest.kept_middle:
            from node.emulator.distill import distill_emulator

            with torch.random.fork_rng(devices=[]):  # distillation runs with dropout on: seed it
                torch.manual_seed(layer_seed(spec.training.seed, -3))
                distill_emulator(emu, base, _data_batches(spec, DISTILL_SEED_OFFSET, fp.distill_steps, labels=False),
                                 steps=fp.distill_steps, lr=DISTILL_LR)
            emu.model.eval()
    return emu


def emulator_blob(emu: Emulator) -> bytes:
    """The emulator's wire form: canonical weight bytes + manifest JSON; its keccak-256 is ``emu.hash()``."""
    return canonical_weight_bytes(emu.model.state_dict()) + emu.manifest.to_json().encode()


def split_blob(blob: bytes) -> tuple[bytes, EmulatorManifest]:
    """(safetensors bytes, manifest) of an emulator blob; EmulatorError when it is not one."""
    try:
        (n,) = struct.unpack("<Q", blob[:8])
        header = json.loads(blob[8:8 + n])
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
        cut = 8 + n + end
        if cut > len(blob):
            raise ValueError("truncated weights")
        manifest = EmulatorManifest.from_json(blob[cut:].decode())
    except (struct.error, ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise EmulatorError(f"not an emulator blob ({len(blob)} bytes): {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    return blob[:cut], manifest


def _skeleton(spec, kept: tuple[int, ...]):
    """A ModelShard of the spec's model holding only ``kept`` layers, parameters on the meta device (no weights read)."""
    from node.model import shard_skeleton

    model = shard_skeleton(spec.model.id, spec.task.kind, spec.task.num_labels, layers=kept)
    return model, model.n_layers


def emulator_from_blob(blob: bytes, spec, expected_hash: str) -> Emulator:
    """The emulator a blob carries, built on the model's config alone; refuses a blob that does not hash to
    ``expected_hash`` or that is not an emulator of the spec's model."""
    from safetensors.torch import load as load_safetensors

    digest = keccak_hex(blob)
    if digest != expected_hash.lower():
        raise EmulatorError(f"emulator blob hashes to {digest}, expected {expected_hash}")
    weights_bytes, manifest = split_blob(blob)
    if manifest.base_model != spec.model.id or manifest.layer_path != "layers" or not manifest.keyed:
        raise EmulatorError(f"emulator {digest} is not an emulator of model {spec.model.id!r} "
                            f"(built from {manifest.base_model!r})")
    model, n = _skeleton(spec, manifest.kept_layers)
    if manifest.num_layers != n:
        raise EmulatorError(f"emulator {digest} was built from a {manifest.num_layers}-layer model; "
                            f"{spec.model.id!r} has {n} layers")
    try:
        model.load_state_dict(load_safetensors(weights_bytes), strict=True, assign=True)
    except (RuntimeError, ValueError) as exc:
        raise EmulatorError(f"emulator {digest}'s weights do not fit model {spec.model.id!r}: "
                            f"{str(exc).splitlines()[0]}") from None
    if any(p.is_meta for p in model.parameters()):
        raise EmulatorError(f"emulator {digest} lacks some of the model's weights")
    model.eval()
    # the bytes hashed right; re-hashing the loaded model proves they are the canonical form of these weights
    if emulator_hash(model, manifest) != digest:
        raise EmulatorError(f"emulator {digest}'s weights are not in canonical form")
    return Emulator(model=model, manifest=manifest, digest=digest)
