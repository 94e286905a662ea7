"""Exporting adapters: PEFT format loads in peft and matches, LoRA merge keeps outputs, bsns format round-trips.

A tiny BERT (2 layers, hidden 32) saved as a headless checkpoint like all-MiniLM-L6-v2, so the
classifier is new and has to travel with the adapter.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)

from node.errors import BsnsError  # noqa: E402
from node.job import JobSpec  # noqa: E402

SPEC = """
[model]
id = "{model}"
[data]
dataset = "none"
path = "none"
[task]
kind = "sequence-classification"
num_labels = 2
[method]
name = "{method}"
config = {config}
[shards]
layers = [[0, 1], [1, 2]]
memory_mb = [1, 1]
[training]
rounds = 1
sync_interval = 1
learning_rate = 0.001
"""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from transformers import BertConfig, BertModel

    d = tmp_path_factory.mktemp("tiny-bert")
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=1000, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=64)
    BertModel(cfg).save_pretrained(d)
    return d


def _spec(model, method, config="{}"):
    return JobSpec.from_text(SPEC.format(model=model, method=method, config=config))


def _trained_state(spec):
    """The seeded initial adapter, moved away from its init (LoRA's B starts at zero, IA3 at one)."""
    from node.train.build import init_adapter_state

    g = torch.Generator().manual_seed(1)
    # built per shard and merged, as a finished session's adapter is
    parts = [init_adapter_state(spec, s, e, seed=3) for s, e in spec.shards.layers]
    state = {k: v for p in parts for k, v in p.items()}
    return {k: v + 0.2 * torch.randn(v.shape, generator=g) for k, v in state.items()}


def _probe():
    g = torch.Generator().manual_seed(7)
    ids = torch.randint(5, 1000, (4, 10), generator=g)
    mask = torch.ones_like(ids)
    mask[2, 6:] = 0
    return ids, mask


@pytest.mark.parametrize("method", ["lora", "ia3"])
def test_peft_export_loads_in_peft_and_gives_same_logits(tiny, tmp_path, method):
    import peft
    from transformers import AutoModelForSequenceClassification

    from node.train.adapter_state import save_adapter
    from node.train.export import build_adapted_model, export_peft

    spec = _spec(tiny, method)
    state = _trained_state(spec)
    out = export_peft(spec, state, tmp_path / "peft")
    assert (out / "adapter_config.json").exists() and (out / "adapter_model.safetensors").exists()

    base = AutoModelForSequenceClassification.from_pretrained(tiny, num_labels=2).eval()
    ids, mask = _probe()
    with torch.no_grad():
        plain = base(input_ids=ids, attention_mask=mask).logits
    model = peft.PeftModel.from_pretrained(base, out).eval()
    ours = build_adapted_model(spec, state)
    with torch.no_grad():
        want = ours(input_ids=ids, attention_mask=mask)
        got = model(input_ids=ids, attention_mask=mask).logits
    assert (got - want).abs().max() <= 1e-5
    assert (plain - want).abs().max() > 1e-3  # the adapter (and head) really changed the model

    # the CLI path: per-shard files -> one PEFT directory
    from typer.testing import CliRunner

    from coordinator.cli import app

    (tmp_path / "spec.toml").write_text(spec.toml_text)
    files = []
    for i, (s, e) in enumerate(spec.shards.layers):
        part = {k: v for k, v in state.items()
                if (k.startswith("layers.") and s <= int(k.split(".")[1]) < e) or (k.startswith("head.") and i == 1)}
        save_adapter(part, tmp_path / f"shard{i}.safetensors")
        files.append(str(tmp_path / f"shard{i}.safetensors"))
    res = CliRunner().invoke(app, ["adapter", "export", str(tmp_path / "spec.toml"), *files,
                                   "--out", str(tmp_path / "cli")])
    assert res.exit_code == 0, res.output
    again = peft.PeftModel.from_pretrained(
        AutoModelForSequenceClassification.from_pretrained(tiny, num_labels=2), tmp_path / "cli").eval()
    with torch.no_grad():
        assert (again(input_ids=ids, attention_mask=mask).logits - want).abs().max() <= 1e-5


def test_merge_lora_equals_unmerged(tiny, tmp_path):
    from transformers import AutoModelForSequenceClassification

    from node.train.adapter_state import merge_lora
    from node.train.export import build_adapted_model, export_merged

    spec = _spec(tiny, "lora", "{ r = 4, alpha = 8.0 }")
    state = _trained_state(spec)
    shard = build_adapted_model(spec, state)
    ids, mask = _probe()
    with torch.no_grad():
        before = shard(input_ids=ids, attention_mask=mask)
    assert merge_lora(shard) == 4  # query and value in 2 layers
    assert not any("lora_" in n for n, _ in shard.named_parameters())
    with torch.no_grad():
        after = shard(input_ids=ids, attention_mask=mask)
    assert (after - before).abs().max() <= 1e-5

    out = export_merged(spec, state, tmp_path / "merged")
    plain = AutoModelForSequenceClassification.from_pretrained(out).eval()
    with torch.no_grad():
        assert (plain(input_ids=ids, attention_mask=mask).logits - before).abs().max() <= 1e-5
    with pytest.raises(BsnsError, match="no LoRA"):
        merge_lora(shard)


def test_bsns_format_round_trip_for_bottleneck(tiny, tmp_path):
    import json

    from node.train.adapter_state import adapter_hash
    from node.train.export import build_adapted_model, export_bsns, export_peft, load_bsns_export

    spec = _spec(tiny, "houlsby", "{ bottleneck_size = 8 }")
    state = _trained_state(spec)
    out = export_bsns(spec, state, tmp_path / "bsns")
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["adapter_hash"] == adapter_hash(state)
    assert config["config"]["bottleneck_size"] == 8 and config["method"] == "houlsby"
    loaded = load_bsns_export(out)
    ids, mask = _probe()
    with torch.no_grad():
        diff = (loaded(input_ids=ids, attention_mask=mask) - build_adapted_model(spec, state)(
            input_ids=ids, attention_mask=mask)).abs().max()
    assert diff == 0
    with pytest.raises(BsnsError, match="PEFT format holds lora, ia3 adapters"):
        export_peft(spec, state, tmp_path / "nope")
    (out / "adapter.safetensors").write_bytes((out / "adapter.safetensors").read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(BsnsError, match="hashes to"):
        load_bsns_export(out)


def test_state_of_another_method_is_refused(tiny):
    from node.train.export import build_adapted_model

    state = _trained_state(_spec(tiny, "lora"))
    with pytest.raises(BsnsError, match="does not fit"):
        build_adapted_model(_spec(tiny, "ia3"), state)


@pytest.mark.parametrize("model_type", ["gpt2", "llama"])
def test_decoder_classifier_exports_to_peft_and_merged(tmp_path, model_type):
    """Decoders classify from a row's last real token, which Hugging Face finds by the pad id: the export's own
    check pads the way the data does, and both the PEFT and the merged export reproduce our logits."""
    import peft
    from transformers import AutoModelForSequenceClassification

    from model.tiny import batch, save_tiny
    from node.train.export import build_adapted_model, export_merged, export_peft

    path = save_tiny(tmp_path, model_type, "sequence-classification")
    spec = JobSpec.from_text(SPEC.format(model=path, method="lora", config="{ r = 4 }")
                             .replace("num_labels = 2", "num_labels = 3").replace("[[0, 1], [1, 2]]", "[[0, 2], [2, 4]]"))
    state = _trained_state(spec)
    ours = build_adapted_model(spec, state)
    ids, mask = batch()
    with torch.no_grad():
        want = ours(input_ids=ids, attention_mask=mask)
        base = AutoModelForSequenceClassification.from_pretrained(path).eval()
        got = peft.PeftModel.from_pretrained(base, export_peft(spec, state, tmp_path / "peft")).eval()(
            input_ids=ids, attention_mask=mask).logits
        merged = AutoModelForSequenceClassification.from_pretrained(export_merged(spec, state, tmp_path / "merged"))
        got_merged = merged.eval()(input_ids=ids, attention_mask=mask).logits
    assert (got - want).abs().max() <= 1e-5 and (got_merged - want).abs().max() <= 1e-5
