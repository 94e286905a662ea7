"""Injecting bottleneck adapters into the layers a shard holds, where the model family says
(``Family.bottleneck_points``: each sub-layer's output projection and its layer norm).

The adapter is registered on the layer (``layers.<i>.adapter_attn`` / ``adapter_ffn``) and runs as
a forward hook on the sub-layer's output projection, so the base model's parameter names and code
stay untouched.
"""

from __future__ import annotations

from node.tuners.bottleneck.config import BottleneckConfig
from node.tuners.bottleneck.layer import BottleneckAdapter


def injection_points(family, placement: str) -> dict[str, tuple[str, str]]:
    """sub-layer -> (output projection, its layer norm) for a placement (Pfeiffer: after the FFN only)."""
    points = family.bottleneck_points
    return dict(points) if placement == "houlsby" else {"ffn": points["ffn"]}


def inject_bottleneck(shard, cfg: BottleneckConfig) -> None:
    d = shard.config.hidden_size
    for idx, layer in shard.layers.items():
        if int(idx) < cfg.skip_layers:
            continue
        for where, (proj_name, norm_name) in injection_points(shard.arch, cfg.placement).items():
            proj = layer.get_submodule(proj_name)
            ref = next(proj.parameters())
            adapter = BottleneckAdapter(d, cfg.bottleneck_size, cfg.non_linearity, cfg.init_std,
                                        dtype=ref.dtype, device=ref.device)
            layer.add_module(f"adapter_{where}", adapter)
            proj.register_forward_hook(adapter.hook)
            if cfg.train_layer_norm:
                for p in layer.get_submodule(norm_name).parameters():
                    p.requires_grad_(True)
