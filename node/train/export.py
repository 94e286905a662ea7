"""Exporting a whole (all shards) adapter: the Hugging Face PEFT format, merged models, and our own format.

- ``export_peft``: LoRA and IA3 adapters as a PEFT adapter directory (``adapter_config.json`` +
  ``adapter_model.safetensors``) that ``peft.PeftModel.from_pretrained(unsharded_model, dir)`` loads.
  The directory is written by PEFT itself (``get_peft_model`` + ``save_pretrained``); what is ours is the
  renaming from shard names to the full model's, the rewriting of per-layer target patterns into
  whole-model ones, and a check, before anything is written, that the PEFT model's logits equal ours.
- ``export_merged``: LoRA/IA3 folded into the base weights (PEFT's ``merge_and_unload``), saved as a
  plain transformers model directory.
- ``export_bsns`` / ``load_bsns_export``: every method (bottleneck adapters, prefix and prompt tuning,
  full fine-tuning, LoRA, IA3) in the format documented in docs/adapter-format.md: the canonical adapter
  bytes (whose keccak-256 is the on-chain hash) beside a JSON config.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Mapping

from node.hashing import keccak_hex
from node.train.adapter_state import AdapterStateError, adapter_hash, canonical_bytes, state_from_bytes

BSNS_FORMAT = "bsns-adapter"
BSNS_FORMAT_VERSION = 1
PROBE_TOLERANCE = 1e-4


def build_adapted_model(spec, state: Mapping, device: str = "cpu"):
    """The whole model (one shard over all layers) with the spec's method injected and ``state`` loaded."""
    import torch

    from node.train.build import inject_method, load_base
    from node.tuners import load_adapter_state_dict

    shard = load_base(spec, 0, None, device, torch.float32)
    inject_method(shard, spec)
    try:
        load_adapter_state_dict(shard, dict(state))
    except AdapterStateError:
        raise
    except Exception as exc:  # TunerError / TrainError: the state is not this spec's adapter
        raise AdapterStateError(f"the adapter does not fit spec method {spec.method.name!r}: {exc}") from None
    shard.eval()
    return shard


def _probe_batch(shard, batch: int = 3, length: int = 12):
    import torch

    g = torch.Generator().manual_seed(1234)
    ids = torch.randint(5, min(shard.config.vocab_size, 1000), (batch, length), generator=g)
    mask = torch.ones_like(ids)
    mask[1, length - 4:] = 0  # one padded row, so masking is checked too
    pad = getattr(shard.config, "pad_token_id", None)
    if pad is not None:
        # as the data pipeline pads: Hugging Face decoders find a row's last token by the pad id
        ids[1, length - 4:] = pad
    return ids, mask


def _whole_model_pattern(family, targets) -> str:
    """A per-layer target spec (PEFT: a regex full-matched against the name inside one layer, or a list
    of name suffixes) rewritten as a regex over the whole model's module names, held layers only."""
    # sorted: PEFT keeps a target list as a set, whose order changes from run to run
    inner = targets if isinstance(targets, str) else r"(?:.*\.)?(?:" + "|".join(re.escape(t) for t in sorted(targets)) + ")"
    return family.hf_layer_pattern() + "(?:" + inner + ")"


def _peft_config(shard, spec):
    """The PEFT config equivalent to the shard's method, for the unsharded model."""
    from node.tuners.base import adapter_param_names

    from node.tuners import get_method, method_names

    method = get_method(spec.method.name)
    if not method.exports_to_peft:
        raise AdapterStateError(f"the PEFT format holds {', '.join(method_names(exports_to_peft=True))} adapters, "
                                f"not {method.name!r} (use the bsns format for it)")
    pcfg = method.peft_config(shard, shard.peft_config)
    for attr in ("target_modules", "feedforward_modules"):  # per-layer patterns -> whole-model ones
        if getattr(pcfg, attr, None):
            setattr(pcfg, attr, _whole_model_pattern(shard.arch, getattr(pcfg, attr)))
    pcfg.task_type = "SEQ_CLS" if shard.task == "sequence-classification" else "CAUSAL_LM"
    from node.model import resolve_model_path

    # what transformers will record as the model's name_or_path (PEFT rewrites it to that anyway)
    pcfg.base_model_name_or_path = str(resolve_model_path(spec.model.id))
    head_modules = sorted({n.split(".")[1] for n in adapter_param_names(shard) if n.startswith("head.")})
    if shard.task == "sequence-classification":
        # the classifier is new (seeded by load_shard, then trained): it must travel with the adapter
        head_modules = sorted(set(head_modules) | {shard.arch.head_layer(shard.task)})
    pcfg.modules_to_save = head_modules or None
    return pcfg


def _hf_model(spec, device: str = "cpu"):
    """The unsharded transformers model the adapter belongs to (what a PEFT user loads)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    from node.model import resolve_model_path

    from transformers.utils import logging as hf_logging

    path = resolve_model_path(spec.model.id)
    # the "classifier newly initialised" load report is expected here: the adapter carries the head
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        if spec.task.kind == "sequence-classification":
            model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=spec.task.num_labels,
                                                                       dtype=torch.float32)
        else:
            model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    finally:
        hf_logging.set_verbosity(level)
    return model.to(device).eval()


def peft_model_from_shard(shard, spec):
    """A ``peft.PeftModel`` over the unsharded model carrying the shard's adapter (and head) weights."""
    import peft
    import torch

    from node.tuners.base import adapter_param_names

    pcfg = _peft_config(shard, spec)
    pm = peft.get_peft_model(_hf_model(spec), pcfg)
    target = dict(pm.named_parameters())
    shard_params = dict(shard.named_parameters())
    names = set(adapter_param_names(shard))
    saved_heads = set(pcfg.modules_to_save or ())
    names |= {n for n in shard_params if n.startswith("head.") and n.split(".")[1] in saved_heads}
    with torch.no_grad():
        for n in sorted(names):
            hf = shard.hf_name(n)
            head = n.split(".")[1] if n.startswith("head.") else None
            if head in saved_heads:
                module, _, leaf = hf.rpartition(".")
                key = f"base_model.model.{module}.modules_to_save.default.{leaf}"
            else:
                key = f"base_model.model.{hf}"
            if key not in target:
                raise AdapterStateError(f"PEFT model has no parameter {key} for adapter parameter {n}")
            target[key].copy_(shard_params[n])
    pm.eval()
    return pm


def _check_same_logits(shard, model, what: str) -> float:
    import torch

    ids, mask = _probe_batch(shard)
    with torch.no_grad():
        ours = shard(input_ids=ids, attention_mask=mask).float()
        theirs = model(input_ids=ids, attention_mask=mask).logits.float()
    if shard.task == "causal-lm":
        ours, theirs = ours[mask.bool()], theirs[mask.bool()]
    diff = float((ours - theirs).abs().max())
    if diff > PROBE_TOLERANCE:
        raise AdapterStateError(f"{what} does not reproduce the adapter's logits (max difference {diff:.2e})")
    return diff


def export_peft(spec, state: Mapping, out_dir: str | Path) -> Path:
    """Write a PEFT adapter directory for a LoRA/IA3 ``state`` (all shards' states merged)."""
    shard = build_adapted_model(spec, state)
    pm = peft_model_from_shard(shard, spec)
    _check_same_logits(shard, pm, "the PEFT model")
    out = Path(out_dir)
    pm.save_pretrained(str(out))
    _write_provenance(out, spec, state)
    return out


def export_merged(spec, state: Mapping, out_dir: str | Path) -> Path:
    """Fold a LoRA/IA3 adapter into the base weights and save a plain transformers model directory."""
    shard = build_adapted_model(spec, state)
    merged = peft_model_from_shard(shard, spec).merge_and_unload()
    _check_same_logits(shard, merged, "the merged model")
    out = Path(out_dir)
    merged.save_pretrained(str(out))
    _write_provenance(out, spec, state)
    return out


def _write_provenance(out: Path, spec, state: Mapping) -> None:
    info = {"adapter_hash": adapter_hash(state), "base_model": spec.model.id, "method": spec.method.name,
            "method_config": spec.method.config, "spec_hash": spec.spec_hash()}
    (out / "bsns_provenance.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def export_bsns(spec, state: Mapping, out_dir: str | Path) -> Path:
    """Write the bsns format: ``adapter.safetensors`` (canonical bytes) + ``adapter_config.json``."""
    shard = build_adapted_model(spec, state)  # proves the state fits the method before writing
    cfg = shard.peft_config.model_dump(mode="json") if spec.method.name != "full" else {}
    data = canonical_bytes(state)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "adapter.safetensors").write_bytes(data)
    config = {
        "format": BSNS_FORMAT,
        "format_version": BSNS_FORMAT_VERSION,
        "adapter_hash": keccak_hex(data),
        "method": spec.method.name,
        "config": cfg,
        "base_model": spec.model.id,
        "base_model_hash": spec.model.weights_hash,
        "family": shard.family,
        "task": spec.task.kind,
        "num_labels": spec.task.num_labels if spec.task.kind == "sequence-classification" else None,
        "num_layers": shard.n_layers,
        "hidden_size": shard.config.hidden_size,
        "parameters": {k: list(v.shape) for k, v in sorted(state.items())},
    }
    (out / "adapter_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return out


def read_bsns_export(path: str | Path) -> tuple[dict, dict]:
    """(config, state) of a bsns-format directory; checks the format and that the bytes match the hash."""
    p = Path(path)
    try:
        config = json.loads((p / "adapter_config.json").read_text(encoding="utf-8"))
        data = (p / "adapter.safetensors").read_bytes()
    except (OSError, ValueError) as exc:
        raise AdapterStateError(f"{p} is not a bsns adapter directory: {exc}") from None
    if config.get("format") != BSNS_FORMAT or config.get("format_version") != BSNS_FORMAT_VERSION:
        raise AdapterStateError(f"{p}: unknown adapter format {config.get('format')!r} "
                                f"version {config.get('format_version')!r}")
    if keccak_hex(data) != config.get("adapter_hash"):
        raise AdapterStateError(f"{p}: adapter.safetensors hashes to {keccak_hex(data)}, "
                                f"the config says {config.get('adapter_hash')}")
    return config, state_from_bytes(data)


def load_bsns_export(path: str | Path, device: str = "cpu"):
    """The whole model with a bsns-format adapter loaded (a ModelShard over all layers, eval mode)."""
    from node.job import JobSpec

    config, state = read_bsns_export(path)
    spec = JobSpec.model_validate({
        "model": {"id": config["base_model"]},
        "data": {"dataset": "-", "path": "-"},
        "task": {"kind": config["task"], "num_labels": config.get("num_labels") or 2},
        "method": {"name": config["method"], "config": config["config"]},
        "shards": {"layers": [[0, config["num_layers"]]], "memory_mb": [1]},
        "training": {"rounds": 1, "sync_interval": 1, "learning_rate": 0.001},
    })
    return build_adapted_model(spec, state, device)
