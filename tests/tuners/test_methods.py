"""Every PEFT method on every family: only the adapter learns, the base stays bit-for-bit, shards agree
with the whole model, initialisation and parameter counts are what the methods define."""

from __future__ import annotations

import pytest
import torch

from model.tiny import MODEL_TYPES, N_LAYERS, batch, run_chain, save_tiny
from node.model import load_shard
from node.tuners import (
    METHODS,
    TunerError,
    UnsupportedBackend,
    adapter_param_names,
    adapter_state_dict,
    get_method,
    load_adapter_state_dict,
)

torch.set_num_threads(1)
TOL = 1e-5
CPU_METHODS = [m for m in METHODS if m != "qlora"]
SMALL = {
    "houlsby": {"bottleneck_size": 8},
    "pfeiffer": {"bottleneck_size": 8},
    "lora": {"r": 4},
    "ia3": {},
    "prefix": {"num_virtual_tokens": 3},
    "prompt": {"num_virtual_tokens": 4},
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-tuners")
    cache = {}

    def get(model_type):
        if model_type not in cache:
            cache[model_type] = save_tiny(root, model_type, "sequence-classification")
        return cache[model_type]

    return get


def shards_with(path, method, ranges, **overrides):
    out = []
    for a, b in ranges:
        shard = load_shard(path, a, b, num_labels=3, device="cpu")
        get_method(method).inject(shard, {**SMALL[method], **overrides})
        out.append(shard)
    return out


def perturb(shard, seed):
    """Move a fresh adapter away from its initialisation so that comparisons are not trivial."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n in adapter_param_names(shard):
            p = shard.get_parameter(n)
            p.add_(torch.randn(p.shape, generator=g) * 0.1)


def labels_loss(labels):
    return lambda logits: torch.nn.functional.cross_entropy(logits, labels)


@pytest.mark.parametrize("model_type", MODEL_TYPES)
@pytest.mark.parametrize("method", CPU_METHODS)
def test_only_adapter_learns_and_base_is_unchanged(tiny, method, model_type):
    shards = shards_with(tiny(model_type), method, [(0, 2), (2, N_LAYERS)])
    base = {}
    for k, shard in enumerate(shards):
        trainable = {n for n, p in shard.named_parameters() if p.requires_grad}
        assert trainable == set(adapter_param_names(shard))
        base[k] = {n: p.detach().clone() for n, p in shard.named_parameters() if n not in trainable}
    before = [adapter_state_dict(s) for s in shards]
    assert before[0], "the first shard must hold adapter parameters"
    opts = [torch.optim.AdamW([p for p in s.parameters() if p.requires_grad], lr=1e-2) for s in shards]
    ids, mask = batch()
    labels = torch.tensor([0, 2, 1])
    for _ in range(3):
        for o in opts:
            o.zero_grad()
        run_chain(shards, ids, mask, loss_fn=labels_loss(labels))
        for shard in shards:
            for n, p in shard.named_parameters():
                assert (p.grad is not None) == p.requires_grad, n
        for o in opts:
            o.step()
    for k, shard in enumerate(shards):
        params = dict(shard.named_parameters())
        for n, t in base[k].items():
            assert torch.equal(params[n], t), f"frozen {n} changed"
        after = adapter_state_dict(shard)
        assert any(not torch.equal(after[n], before[k][n]) for n in after), "the adapter did not learn"


@pytest.mark.parametrize("model_type", MODEL_TYPES)
@pytest.mark.parametrize("method", CPU_METHODS)
def test_sharded_adapters_equal_the_whole_model(tiny, method, model_type):
    path = tiny(model_type)
    shards = shards_with(path, method, [(0, 1), (1, 3), (3, N_LAYERS)])
    for k, shard in enumerate(shards):
        perturb(shard, seed=k)
    union = {}
    for shard in shards:
        union.update(adapter_state_dict(shard))
    (whole,) = shards_with(path, method, [(0, N_LAYERS)])
    assert set(adapter_param_names(whole)) == set(union)  # shard-local names compose to the whole's
    load_adapter_state_dict(whole, union)

    ids, mask = batch()
    labels = torch.tensor([1, 0, 2])
    chain_out, _ = run_chain(shards, ids, mask, loss_fn=labels_loss(labels))
    whole_out = whole(input_ids=ids, attention_mask=mask)
    labels_loss(labels)(whole_out).backward()
    assert (chain_out - whole_out.detach()).abs().max() < TOL
    whole_params = dict(whole.named_parameters())
    for shard in shards:
        for n in adapter_param_names(shard):
            assert (shard.get_parameter(n).grad - whole_params[n].grad).abs().max() < TOL, n


@pytest.mark.parametrize("model_type", MODEL_TYPES)
@pytest.mark.parametrize("method", ["houlsby", "pfeiffer", "lora", "ia3"])
def test_fresh_adapter_leaves_outputs_unchanged(tiny, method, model_type):
    shard = load_shard(tiny(model_type), 0, N_LAYERS, num_labels=3, device="cpu")
    ids, mask = batch()
    expected = shard(input_ids=ids, attention_mask=mask).detach()
    get_method(method).inject(shard, SMALL[method])
    assert torch.equal(shard(input_ids=ids, attention_mask=mask), expected)
    perturb(shard, seed=3)  # and the adapter is really in the computation
    assert not torch.allclose(shard(input_ids=ids, attention_mask=mask), expected)


@pytest.mark.parametrize("model_type", ["bert", "gpt2", "llama", "phi3"])
def test_prompt_tuning_is_a_prepended_soft_prompt(tiny, model_type):
    """The shard with a soft prompt computes what the HF model computes on [prompt; embeddings]."""
    from transformers import AutoModelForSequenceClassification

    path = tiny(model_type)
    (shard,) = shards_with(path, "prompt", [(0, N_LAYERS)], train_head=False)
    perturb(shard, seed=1)
    ref = AutoModelForSequenceClassification.from_pretrained(path, attn_implementation="sdpa").eval()
    ids, _ = batch()
    mask = torch.ones_like(ids)  # HF cannot find the last token of padded inputs_embeds
    prompt = shard.prompt_encoder(ids.shape[0])
    embeds = torch.cat([prompt, ref.get_input_embeddings()(ids)], dim=1)
    expected = ref(inputs_embeds=embeds, attention_mask=shard.extend_attention_mask(mask)).logits
    assert (shard(input_ids=ids, attention_mask=mask) - expected).abs().max() < TOL


@pytest.mark.parametrize("model_type", ["gpt2", "llama"])
def test_prefix_tuning_is_a_key_value_prefix(tiny, model_type):
    """The shard with prefixes computes what the HF model computes with them as cached keys/values.

    (Not for sliding-window models: there our prefixes stay visible to every query, while cached
    tokens would fall out of the window.)"""
    from transformers import AutoModelForSequenceClassification, DynamicCache

    path = tiny(model_type)
    (shard,) = shards_with(path, "prefix", [(0, N_LAYERS)], train_head=False)
    perturb(shard, seed=2)
    ref = AutoModelForSequenceClassification.from_pretrained(path, attn_implementation="sdpa").eval()
    ids, mask = batch()
    cache = DynamicCache(config=ref.config)
    for i, (k, v) in sorted(shard.prefix_encoder(ids.shape[0]).items()):
        cache.update(k.detach().clone(), v.detach().clone(), i)
    p = shard.prefix_encoder.num_tokens
    full_mask = torch.cat([torch.ones(ids.shape[0], p, dtype=mask.dtype), mask], dim=1)
    expected = ref(input_ids=ids, attention_mask=full_mask, cache=cache,
                   position_ids=torch.arange(ids.shape[1])[None]).logits
    assert (shard(input_ids=ids, attention_mask=mask) - expected).abs().max() < TOL


def test_prompt_mask_reaches_later_shards_either_way(tiny):
    shards = shards_with(tiny("llama"), "prompt", [(0, 2), (2, N_LAYERS)])
    perturb(shards[0], seed=4)
    ids, mask = batch()
    h = shards[0](input_ids=ids, attention_mask=mask)
    assert h.shape[1] == ids.shape[1] + 4
    extended = shards[0].extend_attention_mask(mask)
    assert extended.shape == (3, ids.shape[1] + 4) and bool(extended[:, :4].all())
    a = shards[1](hidden_states=h, attention_mask=extended)
    b = shards[1](hidden_states=h, attention_mask=mask)
    assert torch.equal(a, b)


# ---- parameter counts -----------------------------------------------------------------------

def count(shard):
    return sum(shard.get_parameter(n).numel() for n in adapter_param_names(shard))


@pytest.mark.parametrize("model_type", ["bert", "gpt2", "llama", "phi3"])
def test_parameter_counts_follow_the_formulas(tiny, model_type):
    path = tiny(model_type)
    cfg = load_shard(path, 0, 1, device="cpu").config
    d, L, C = cfg.hidden_size, N_LAYERS, 3
    heads = cfg.num_attention_heads
    kv = getattr(cfg, "num_key_value_heads", None) or heads
    hd = d // heads
    inner = getattr(cfg, "intermediate_size", None) or getattr(cfg, "n_inner", None) or 4 * d
    ln = d if model_type in ("llama", "phi3") else 2 * d  # RMSNorm has no bias
    m = 8

    def whole(method, **cfg_):
        (s,) = shards_with(path, method, [(0, L)], **cfg_)
        return count(s)

    # one adapter: 2md + d + m, plus its sub-layer's layer norm
    per_adapter = 2 * m * d + d + m
    assert whole("houlsby", train_head=False) == L * 2 * (per_adapter + ln)
    assert whole("pfeiffer", train_head=False) == L * (per_adapter + ln)
    assert whole("houlsby", train_head=False, skip_layers=1, train_layer_norm=False) == (L - 1) * 2 * per_adapter
    head = (d + 1) * C if model_type == "bert" else d * C
    assert whole("pfeiffer") == L * (per_adapter + ln) + head

    r = 4
    lora_per_layer = {
        "bert": r * (d + d) * 2,                               # query, value
        "gpt2": r * (d + 3 * d),                               # fused c_attn
        "llama": r * (d + heads * hd) + r * (d + kv * hd),     # q_proj, v_proj
        "phi3": r * (d + (heads + 2 * kv) * hd),               # fused qkv_proj
    }[model_type]
    assert whole("lora", train_head=False) == L * lora_per_layer

    ia3_per_layer = {
        "bert": d + d + inner,          # key, value outputs; FFN output projection's input
        "gpt2": 3 * d + inner,
        "llama": 2 * kv * hd + inner,
        "phi3": (heads + 2 * kv) * hd + inner,  # the fused qkv_proj's outputs
    }[model_type]
    assert whole("ia3", train_head=False) == L * ia3_per_layer

    assert whole("prefix", train_head=False) == L * 2 * kv * 3 * hd
    first, last = shards_with(path, "prompt", [(0, 2), (2, L)], train_head=False)
    assert (count(first), count(last)) == (4 * d, 0)


# ---- adapter state ----------------------------------------------------------------------------

def test_adapter_state_roundtrip_and_strictness(tiny):
    path = tiny("gpt2")
    a, b = (shards_with(path, "houlsby", [(2, N_LAYERS)])[0] for _ in range(2))
    perturb(a, seed=7)
    state = adapter_state_dict(a)
    assert list(state) == sorted(state)
    assert all(k.startswith(("layers.2.", "layers.3.", "head.")) for k in state)
    load_adapter_state_dict(b, state)
    assert all(torch.equal(v, adapter_state_dict(b)[k]) for k, v in state.items())

    # a copy, not a view: changing the returned state leaves the shard alone
    state["head.score.weight"].zero_()
    assert not torch.equal(adapter_state_dict(a)["head.score.weight"], state["head.score.weight"])

    good = adapter_state_dict(b)
    key = "layers.3.adapter_ffn.up.weight"
    bad_shape = {**good, key: torch.zeros(3, 3)}
    missing = {k: v for k, v in good.items() if k != key}
    extra = {**good, "layers.9.adapter_ffn.up.weight": good[key]}
    for bad, match in [(bad_shape, f"{key} has shape"), (missing, "missing 1"), (extra, "unexpected 1")]:
        with pytest.raises(TunerError, match=match):
            load_adapter_state_dict(b, bad)
    after = adapter_state_dict(b)
    assert all(torch.equal(after[k], good[k]) for k in good)  # a refused load changed nothing


# ---- errors -----------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "method,cfg,match",
    [
        ("lora", {"r": 0}, "field 'r'"),
        ("lora", {"target_modules": ["nope"]}, "field 'target_modules': no module named 'nope'"),
        ("houlsby", {"bottleneck_size": -1}, "field 'bottleneck_size'"),
        ("houlsby", {"non_linearity": "softmax"}, "field 'non_linearity'"),
        ("pfeiffer", {"placement": "houlsby"}, "field 'placement'"),
        ("prefix", {"num_virtual_tokens": 0}, "field 'num_virtual_tokens'"),
        ("prompt", {"init": "text"}, "field 'init'"),
        ("ia3", {"rank": 4}, "field 'rank'"),
        ("ia3", {"target_modules": ["key"], "feedforward_modules": ["value"]}, "field 'feedforward_modules'"),
    ],
)
def test_bad_configs_name_the_field(tiny, method, cfg, match):
    shard = load_shard(tiny("bert"), 0, 2, device="cpu")
    with pytest.raises(TunerError, match=match) as info:
        get_method(method).inject(shard, cfg)
    assert "\n" not in str(info.value)


def test_unknown_method_twice_injected_and_uninjected(tiny):
    with pytest.raises(TunerError, match="unknown PEFT method 'adapterfusion' \\(known: houlsby, pfeiffer"):
        get_method("adapterfusion")
    shard = load_shard(tiny("bert"), 0, 2, device="cpu")
    with pytest.raises(TunerError, match="no PEFT method"):
        adapter_state_dict(shard)
    get_method("lora").inject(shard)
    with pytest.raises(TunerError, match="already has PEFT method 'lora'"):
        get_method("houlsby").inject(shard)


def test_qlora_without_cuda_says_so(tiny):
    shard = load_shard(tiny("llama"), 0, 2, device="cpu")
    before = {n: p.clone() for n, p in shard.named_parameters()}
    with pytest.raises(UnsupportedBackend, match="qlora needs a CUDA device .* this shard is on cpu"):
        get_method("qlora").inject(shard, {"r": 4})
    assert all(torch.equal(p, before[n]) for n, p in shard.named_parameters())
    assert getattr(shard, "peft_method", None) is None


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("model_type", ["llama", "gpt2"])
def test_qlora_on_cuda(tiny, model_type):
    # no importorskip: scripts/setup.sh installs bitsandbytes (the gpu extra) wherever CUDA is present, so on a
    # GPU machine a missing package fails here instead of skipping the only QLoRA test
    shard = load_shard(tiny(model_type), 0, N_LAYERS, num_labels=3, device="cuda")
    get_method("qlora").inject(shard, {"r": 4, "compute_dtype": "float32"})
    names = set(adapter_param_names(shard))
    assert names and all(("lora_" in n) or n.startswith("head.") for n in names)
    frozen = {n: p.detach().clone() for n, p in shard.named_parameters() if n not in names}
    opt = torch.optim.AdamW([p for p in shard.parameters() if p.requires_grad], lr=1e-2)
    ids, mask = batch()
    for _ in range(2):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(shard(input_ids=ids.cuda(), attention_mask=mask.cuda()),
                                                 torch.tensor([0, 1, 2], device="cuda"))
        loss.backward()
        opt.step()
    assert all(torch.equal(p, frozen[n]) for n, p in shard.named_parameters() if n in frozen)
