"""The three supported model families and where their parts live inside a Hugging Face model.

A family says which submodules of the full ``*ForSequenceClassification`` / ``*ForCausalLM`` model a
shard takes (embeddings, layers, final norm, head), and how shard-local parameter names map back to
the full model's names (used to pick checkpoint keys and to export adapters in HF naming).
Llama, Qwen2 and Mistral share one code path.
"""

from __future__ import annotations

from dataclasses import dataclass

FAMILY_OF_MODEL_TYPE = {
    "bert": "bert",
    "gpt2": "gpt2",
    "llama": "llama",
    "qwen2": "llama",
    "mistral": "llama",
}

TASKS = ("sequence-classification", "causal-lm")


@dataclass(frozen=True)
class Family:
    name: str
    # (shard-local prefix, full-model prefix); "{i}" stands for the global layer index
    prefix_map: tuple[tuple[str, str], ...]
    causal: bool

    def hf_name(self, shard_name: str) -> str:
        """Full-model parameter name for a shard-local one (``layers.3.x`` -> ``model.layers.3.x``)."""
        if shard_name.startswith("layers."):
            rest = shard_name[len("layers."):]
            idx, _, tail = rest.partition(".")
            layer_prefix = dict(self.prefix_map)["layers.{i}."].replace("{i}", idx)
            return layer_prefix + tail
        for local, full in self.prefix_map:
            if "{i}" not in local and shard_name.startswith(local):
                return full + shard_name[len(local):]
        raise KeyError(shard_name)


FAMILIES = {
    "bert": Family(
        "bert",
        (
            ("embeddings.", "bert.embeddings."),
            ("layers.{i}.", "bert.encoder.layer.{i}."),
            ("head.pooler.", "bert.pooler."),
            ("head.classifier.", "classifier."),
        ),
        causal=False,
    ),
    "gpt2": Family(
        "gpt2",
        (
            ("embeddings.wte.", "transformer.wte."),
            ("embeddings.wpe.", "transformer.wpe."),
            ("layers.{i}.", "transformer.h.{i}."),
            ("norm.", "transformer.ln_f."),
            ("head.score.", "score."),
            ("head.lm_head.", "lm_head."),
        ),
        causal=True,
    ),
    "llama": Family(
        "llama",
        (
            ("embeddings.embed_tokens.", "model.embed_tokens."),
            ("layers.{i}.", "model.layers.{i}."),
            ("norm.", "model.norm."),
            ("head.score.", "score."),
            ("head.lm_head.", "lm_head."),
        ),
        causal=True,
    ),
}


def base_parts(full_model, family: str):
    """(embeddings: a module or a dict of modules, layer list, final norm or None, rotary or None)."""
    if family == "bert":
        base = full_model.bert
        return base.embeddings, list(base.encoder.layer), None, None
    if family == "gpt2":
        base = full_model.transformer
        return {"wte": base.wte, "wpe": base.wpe, "drop": base.drop}, list(base.h), base.ln_f, None
    base = full_model.model
    return {"embed_tokens": base.embed_tokens}, list(base.layers), base.norm, base.rotary_emb


def head_parts(full_model, family: str, task: str) -> dict:
    """The task head's modules, keyed by their shard-local names under ``head.``."""
    if task == "causal-lm":
        return {"lm_head": full_model.lm_head}
    if family == "bert":
        parts = {"dropout": full_model.dropout, "classifier": full_model.classifier}
        if full_model.bert.pooler is not None:
            parts["pooler"] = full_model.bert.pooler
        return parts
    return {"score": full_model.score}
