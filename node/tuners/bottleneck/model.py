"""Injecting bottleneck adapters into the layers a shard holds, for each model family.

The adapter is registered on the layer (``layers.<i>.adapter_attn`` / ``adapter_ffn``) and runs as
a forward hook on the sub-layer's output projection, so the base model's parameter names and code
stay untouched.
"""

from __future__ import annotations

from node.tuners.bottleneck.config import BottleneckConfig
from node.tuners.bottleneck.layer import BottleneckAdapter

# family -> sub-layer -> (output projection, layer norm belonging to that sub-layer)
_POINTS = {
    "bert": {"attn": ("attention.output.dense", "attention.output.LayerNorm"),
             "ffn": ("output.dense", "output.LayerNorm")},
    "gpt2": {"attn": ("attn.c_proj", "ln_1"), "ffn": ("mlp.c_proj", "ln_2")},
    "llama": {"attn": ("self_attn.o_proj", "input_layernorm"),
              "ffn": ("mlp.down_proj", "post_attention_layernorm")},
}


def injection_points(family: str, placement: str) -> dict[str, tuple[str, str]]:
    points = _POINTS[family]
    return dict(points) if placement == "houlsby" else {"ffn": points["ffn"]}


def inject_bottleneck(shard, cfg: BottleneckConfig) -> None:
    d = shard.config.hidden_size
    for idx, layer in shard.layers.items():
        if int(idx) < cfg.skip_layers:
            continue
        for where, (proj_name, norm_name) in injection_points(shard.family, cfg.placement).items():
            proj = layer.get_submodule(proj_name)
            ref = next(proj.parameters())
            adapter = BottleneckAdapter(d, cfg.bottleneck_size, cfg.non_linearity, cfg.init_std,
                                        dtype=ref.dtype, device=ref.device)
            layer.add_module(f"adapter_{where}", adapter)
            proj.register_forward_hook(adapter.hook)
            if cfg.train_layer_norm:
                for p in layer.get_submodule(norm_name).parameters():
                    p.requires_grad_(True)
