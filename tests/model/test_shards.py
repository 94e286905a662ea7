"""Shards of every family reproduce the unsharded Hugging Face model: outputs and gradients."""

from __future__ import annotations

import pytest
import torch

from node.model import ModelError, load_shard, model_family, model_layer_count

from .tiny import MODEL_TYPES, N_LAYERS, batch, run_chain, save_tiny

torch.set_num_threads(1)
TOL = 1e-5


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    cache = {}

    def get(model_type, task="sequence-classification"):
        if (model_type, task) not in cache:
            cache[(model_type, task)] = save_tiny(root, model_type, task)
        return cache[(model_type, task)]

    return get


def hf_model(path, task):
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    auto = AutoModelForSequenceClassification if task == "sequence-classification" else AutoModelForCausalLM
    model = auto.from_pretrained(path, attn_implementation="sdpa")
    return model.eval()


CASES = [(t, "sequence-classification") for t in MODEL_TYPES] + [
    (t, "causal-lm") for t in MODEL_TYPES if t != "bert"
]


@pytest.mark.parametrize("model_type,task", CASES)
def test_chained_shards_match_unsharded_model(tiny_dir, model_type, task):
    path = tiny_dir(model_type, task)
    ids, mask = batch()
    ref = hf_model(path, task)
    out = ref(input_ids=ids, attention_mask=mask).logits
    grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(5))
    out.backward(grad_out)

    # the boundary gradient the unsharded model sees at the input of layer 2
    whole = load_shard(path, 0, None, task=task, num_labels=3, device="cpu")
    seen = {}

    def keep(module, args, kwargs):
        args[0].retain_grad()
        seen["h"] = args[0]

    whole.layers["2"].register_forward_pre_hook(keep, with_kwargs=True)
    whole_out = whole(input_ids=ids, attention_mask=mask)
    whole_out.backward(grad_out)
    assert (whole_out - out).abs().max() < TOL

    shards = [load_shard(path, a, b, task=task, num_labels=3, device="cpu") for a, b in [(0, 1), (1, 2), (2, 4)]]
    chain_out, received = run_chain(shards, ids, mask, grad_out)
    assert chain_out.shape == out.shape
    assert (chain_out - out).abs().max() < TOL
    assert (received[1].grad - seen["h"].grad).abs().max() < TOL

    # every parameter got the unsharded model's gradient; a tied embedding / LM head lives on two
    # shards, and their gradients add up to the tied weight's
    sums: dict[int, torch.Tensor] = {}
    for shard in shards:
        for n, p in shard.named_parameters():
            assert p.grad is not None, n
            target = ref.get_parameter(shard.hf_name(n))
            sums[id(target)] = sums.get(id(target), 0) + p.grad
    ref_params = {id(p): (n, p) for n, p in ref.named_parameters()}
    assert set(sums) == set(ref_params)
    for key, total in sums.items():
        name, p = ref_params[key]
        assert (total - p.grad).abs().max() < TOL, name


def test_minilm_shards_match_transformers():
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from node.model import resolve_model_path

    path = resolve_model_path("sentence-transformers/all-MiniLM-L6-v2")
    tok = AutoTokenizer.from_pretrained(str(path))
    enc = tok(["a gripping, funny film", "dull"], padding=True, return_tensors="pt")
    first = load_shard("minilm", 0, 4, device="cpu")
    last = load_shard("minilm", 4, None, device="cpu")
    assert (first.is_first, first.is_last, last.is_first, last.is_last) == (True, False, False, True)
    assert last.newly_initialized == ["head.classifier.bias", "head.classifier.weight"] or sorted(
        last.newly_initialized) == ["head.classifier.bias", "head.classifier.weight"]

    ref = AutoModelForSequenceClassification.from_pretrained(str(path), num_labels=2).eval()
    with torch.no_grad():  # the new head is seeded by us, not by transformers: give both the same
        ref.classifier.weight.copy_(last.head["classifier"].weight)
        ref.classifier.bias.copy_(last.head["classifier"].bias)
    expected = ref(**enc).logits
    got, received = run_chain([first, last], enc["input_ids"], enc["attention_mask"])
    assert (got - expected).abs().max() < TOL
    assert received[0].shape == (2, enc["input_ids"].shape[1], 384)
    # the same seed gives the same new head on every replica
    again = load_shard("minilm", 5, None, device="cpu")
    assert torch.equal(again.head["classifier"].weight, last.head["classifier"].weight)


def test_shard_reads_only_its_own_tensors(tiny_dir, monkeypatch):
    import safetensors

    path = tiny_dir("llama")
    read = []
    real_open = safetensors.safe_open

    class Spy:
        def __init__(self, *a, **k):
            self.f = real_open(*a, **k)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def keys(self):
            return self.f.keys()

        def get_tensor(self, key):
            read.append(key)
            return self.f.get_tensor(key)

    monkeypatch.setattr(safetensors, "safe_open", Spy)
    shard = load_shard(path, 1, 2, device="cpu")
    assert read and all(k.startswith("model.layers.1.") for k in read)
    assert all(n.startswith("layers.1.") for n, _ in shard.named_parameters())
    assert shard.embeddings is None and shard.norm is None and shard.head is None
    assert not any(p.is_meta for p in shard.parameters())


def test_tied_lm_head_follows_embeddings(tiny_dir):
    path = tiny_dir("gpt2", "causal-lm")
    whole = load_shard(path, 0, None, task="causal-lm", device="cpu")
    assert whole.head["lm_head"].weight is whole.embeddings["wte"].weight
    last = load_shard(path, 3, None, task="causal-lm", device="cpu")
    assert torch.equal(last.head["lm_head"].weight, whole.embeddings["wte"].weight)
    assert last.newly_initialized == []


def test_family_and_layer_count(tiny_dir):
    assert model_family("minilm") == "bert"
    assert model_layer_count("minilm") == 6
    for t in ("gpt2", "qwen2", "mistral"):
        assert model_layer_count(tiny_dir(t)) == N_LAYERS
    # Qwen2 and Mistral are Llama with their own attention windows; Phi-3 is a family of its own
    assert [model_family(tiny_dir(t)) for t in ("qwen2", "mistral", "phi3")] == ["llama", "llama", "phi3"]


def test_later_shard_accepts_original_or_extended_mask(tiny_dir):
    # without a soft prompt both are the same mask; wrong lengths are refused
    path = tiny_dir("gpt2")
    shard = load_shard(path, 2, 4, device="cpu")
    h = torch.randn(3, 7, 32)
    ids, mask = batch()
    shard(hidden_states=h, attention_mask=mask)
    with pytest.raises(ModelError, match="attention_mask must have shape"):
        shard(hidden_states=h, attention_mask=mask[:, :5])


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(model_id="no/such-model-anywhere"), "unknown model 'no/such-model-anywhere'"),
        (dict(model_id="/no/such/dir"), "model directory /no/such/dir does not exist"),
        (dict(model_id="minilm", start=4, end=2), r"shard range \[4, 2\) is invalid for a model with 6 layers"),
        (dict(model_id="minilm", start=0, end=7), r"shard range \[0, 7\)"),
        (dict(model_id="minilm", task="causal-lm"), "needs a decoder model"),
        (dict(model_id="minilm", task="translation"), "unknown task 'translation'"),
        (dict(model_id="minilm", num_labels=0), "num_labels must be a positive integer"),
    ],
)
def test_bad_model_requests_give_one_line_errors(kwargs, match, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match=match) as info:
        load_shard(device="cpu", **kwargs)
    assert "\n" not in str(info.value)


def test_bad_shard_inputs_are_refused(tiny_dir):
    path = tiny_dir("bert")
    first = load_shard(path, 0, 2, device="cpu")
    second = load_shard(path, 2, 4, device="cpu")
    with pytest.raises(ModelError, match="needs input_ids"):
        first(hidden_states=torch.randn(1, 3, 32))
    with pytest.raises(ModelError, match="needs hidden_states"):
        second(input_ids=torch.ones(1, 3, dtype=torch.long))
    with pytest.raises(ModelError, match=r"hidden_states must have shape \(batch, length, 32\)"):
        second(hidden_states=torch.randn(1, 3, 16))
    with pytest.raises(ModelError, match="exceeds the model's 64"):
        first(input_ids=torch.ones(1, 65, dtype=torch.long))
