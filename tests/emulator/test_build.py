"""Emulators: declared layers kept, smaller by the declared ratio, content hash, plug-in into the full model."""

from __future__ import annotations

import pytest
import torch

from node.emulator import (EmulatorError, block_influence, build_emulator, distill_emulator, emulator_adapter_layers,
                           emulator_to_full, find_layers, full_to_emulator, load_emulator, save_emulator)

torch.set_num_threads(1)


def tiny_bert(seed=0, layers=6):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=120, hidden_size=32, num_hidden_layers=layers, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=64, num_labels=2,
                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return BertForSequenceClassification(cfg).eval()


def batch(n=4, t=12, seed=1):
    g = torch.Generator().manual_seed(seed)
    return {"input_ids": torch.randint(5, 120, (n, t), generator=g), "attention_mask": torch.ones(n, t, dtype=torch.long),
            "labels": torch.randint(0, 2, (n,), generator=g)}


def layer_params(layer):
    return sum(p.numel() for p in layer.parameters())


@pytest.mark.parametrize("retention,kept", [(0.0, (0, 5)), (0.25, (0, 3, 5)), (0.5, (0, 2, 4, 5)),
                                            (0.75, (0, 1, 3, 4, 5)), (1.0, (0, 1, 2, 3, 4, 5))])
def test_emulator_keeps_declared_layers_and_shrinks_by_the_ratio(retention, kept):
    model = tiny_bert()
    emu = build_emulator(model, retention=retention, k=1)
    m = emu.manifest
    assert m.adapter_layers == (0, 5) and m.middle_layers == (1, 2, 3, 4)
    assert m.kept_layers == kept
    _, full_layers = find_layers(model)
    _, emu_layers = find_layers(emu.model)
    assert len(emu_layers) == len(kept) and emu.model.config.num_hidden_layers == len(kept)
    # every kept layer carries the original layer's weights
    for j, i in enumerate(kept):
        for (na, a), (nb, b) in zip(full_layers[i].state_dict().items(), emu_layers[j].state_dict().items()):
            assert na == nb and torch.equal(a, b)
    middle_full = sum(layer_params(full_layers[i]) for i in m.middle_layers)
    middle_emu = sum(layer_params(emu_layers[m.emulator_index(i)]) for i in m.kept_middle)
    assert middle_emu == pytest.approx(retention * middle_full)
    total_full = sum(p.numel() for p in model.parameters())
    total_emu = sum(p.numel() for p in emu.model.parameters())
    assert total_full - total_emu == pytest.approx((1 - retention) * middle_full)
    # the original model is untouched and the emulator runs on the same inputs
    assert len(find_layers(model)[1]) == 6
    assert emu.model(**batch()).logits.shape == (4, 2)


def test_k_two_keeps_two_layers_at_each_end():
    emu = build_emulator(tiny_bert(layers=8), retention=0.5, k=2)
    assert emu.manifest.adapter_layers == (0, 1, 6, 7)
    assert emu.manifest.kept_layers == (0, 1, 3, 5, 6, 7)  # centres of two equal slices of 2..5


def test_importance_rule_keeps_the_most_influential_middle_layers():
    model = tiny_bert()
    calib = [batch(seed=s) for s in range(2)]
    scores = block_influence(model, calib, range(1, 5))
    emu = build_emulator(model, retention=0.5, rule="importance", calibration=calib)
    top2 = sorted(sorted(range(1, 5), key=lambda i: -scores[i])[:2])
    assert list(emu.manifest.kept_middle) == top2
    assert emu.manifest.rule == "importance"


@pytest.mark.parametrize("kwargs,match", [
    ({"retention": 1.5}, "retention must be"),
    ({"retention": -0.1}, "retention must be"),
    ({"retention": 0.5, "k": 4}, "does not fit"),
    ({"retention": 0.5, "rule": "importance"}, "calibration"),
    ({"retention": 0.5, "rule": "magic"}, "unknown layer-drop rule"),
    ({"retention": 0.5, "adapter_layers": [0, 9]}, "outside"),
])
def test_bad_emulator_arguments_are_refused(kwargs, match):
    with pytest.raises(EmulatorError, match=match):
        build_emulator(tiny_bert(), **kwargs)


def test_other_families_are_layer_dropped_too():
    from transformers import GPT2Config, GPT2ForSequenceClassification, LlamaConfig, LlamaForSequenceClassification

    torch.manual_seed(0)
    gpt2 = GPT2ForSequenceClassification(GPT2Config(vocab_size=100, n_embd=32, n_layer=6, n_head=4, n_positions=64,
                                                    pad_token_id=0)).eval()
    llama = LlamaForSequenceClassification(LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64,
                                                       num_hidden_layers=6, num_attention_heads=4, num_key_value_heads=2,
                                                       pad_token_id=0)).eval()
    ids = torch.randint(1, 100, (2, 10))
    for model, path in ((gpt2, "transformer.h"), (llama, "model.layers")):
        emu = build_emulator(model, retention=0.5)
        assert emu.manifest.layer_path == path and emu.manifest.kept_layers == (0, 2, 4, 5)
        assert emu.model(input_ids=ids).logits.shape == (2, 2)


def test_hash_is_content_addressed_and_store_round_trips(tmp_path):
    model = tiny_bert()
    a = build_emulator(model, retention=0.5)
    assert build_emulator(tiny_bert(), retention=0.5).hash() == a.hash()
    assert build_emulator(model, retention=0.25).hash() != a.hash()
    assert a.hash().startswith("0x") and len(a.hash()) == 66
    save_emulator(a, tmp_path / "e")
    b = load_emulator(tmp_path / "e", tiny_bert())
    assert b.hash() == a.hash() and b.manifest == a.manifest
    x = batch()
    assert torch.allclose(a.model(**x).logits, b.model(**x).logits)
    with pytest.raises(EmulatorError, match="hashes to"):
        load_emulator(tmp_path / "e", tiny_bert(), expected_hash="0x" + "00" * 32)
    with pytest.raises(EmulatorError, match="6-layer|layer model"):
        load_emulator(tmp_path / "e", tiny_bert(layers=8))
    with pytest.raises(EmulatorError, match="cannot read"):
        load_emulator(tmp_path / "missing", tiny_bert())


def test_distillation_moves_the_kept_middle_toward_the_full_model():
    model = tiny_bert()
    emu = build_emulator(model, retention=0.25)
    before = emu.hash()
    _, layers0 = find_layers(emu.model)
    first_before = {k: v.clone() for k, v in layers0[0].state_dict().items()}
    batches = [batch(seed=s) for s in range(40)]
    losses = distill_emulator(emu, model, batches, steps=40, lr=3e-3)
    assert len(losses) == 40
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5
    assert emu.manifest.distill_steps == 40 and emu.hash() != before
    # only the kept middle is trained: the adapter-bearing layers are exactly the original ones
    for k, v in find_layers(emu.model)[1][0].state_dict().items():
        assert torch.equal(v, first_before[k])
    with pytest.raises(EmulatorError, match="ran out"):
        distill_emulator(emu, model, batches[:2], steps=3)


def inject_lora(model, layers, path):
    from peft import LoraConfig, inject_adapter_in_model

    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"], layers_to_transform=list(layers),
                     layers_pattern=path.split(".")[-1])
    model = inject_adapter_in_model(cfg, model)
    for n, p in model.named_parameters():
        p.requires_grad_("lora_" in n or n.startswith("classifier."))
    return model


def train_few(model, steps=5):
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for s in range(steps):
        loss = model(**batch(seed=10 + s)).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("retention", [0.25, 1.0])
def test_adapters_trained_on_the_emulator_load_into_the_full_model(retention):
    full = tiny_bert()
    emu = build_emulator(full, retention=retention)
    m = emu.manifest
    emu_model = inject_lora(emu.model, emulator_adapter_layers(m), m.layer_path)
    state = train_few(emu_model)
    plugged = emulator_to_full(state, m)
    assert {k.split(".")[3] for k in plugged if ".layer." in k} == {"0", "5"}
    full_model = inject_lora(full, m.adapter_layers, m.layer_path)
    params = dict(full_model.named_parameters())
    trainable = {n for n, p in params.items() if p.requires_grad}
    assert set(plugged) == trainable  # strict: every adapter weight has its place, nothing is left over
    with torch.no_grad():
        for k, v in plugged.items():
            params[k].copy_(v)
    # the last layer's adapter trained at emulator index len-1 now sits at full index 5
    last = len(m.kept_layers) - 1
    key_emu = f"bert.encoder.layer.{last}.attention.self.query.lora_B.default.weight"
    key_full = "bert.encoder.layer.5.attention.self.query.lora_B.default.weight"
    assert torch.equal(params[key_full], state[key_emu]) and state[key_emu].abs().sum() > 0
    assert full_to_emulator(plugged, m).keys() == state.keys()
    if retention == 1.0:  # an emulator that keeps everything is the model: plug-in reproduces it exactly
        x = batch(seed=99)
        assert torch.allclose(full_model(**x).logits, emu_model(**x).logits, atol=1e-6)


def test_adapter_on_a_dropped_middle_layer_cannot_be_plugged():
    emu = build_emulator(tiny_bert(), retention=0.5)
    bad = {"bert.encoder.layer.1.attention.self.query.lora_A.default.weight": torch.zeros(4, 32)}
    with pytest.raises(EmulatorError, match="not an adapter layer"):
        emulator_to_full(bad, emu.manifest)


def test_emulator_of_a_node_model_shard_keeps_global_names_and_takes_node_tuners_adapters():
    from node.emulator import inject_adapters
    from node.model import load_shard
    from node.tuners import adapter_state_dict, load_adapter_state_dict

    full = load_shard("minilm", 0, None, task="sequence-classification", num_labels=2, device="cpu")
    emu = build_emulator(full, retention=0.5)
    assert emu.manifest.keyed and list(emu.model.layers.keys()) == ["0", "2", "4", "5"]
    params = {"r": 4, "alpha": 8, "target_modules": ["query", "value"]}
    emu_model = inject_adapters(emu.model, emu.manifest.adapter_layers, "lora", params)
    assert list(emu_model.layers.keys()) == ["0", "2", "4", "5"]  # the middle is back, in order, frozen
    assert not any(p.requires_grad for p in emu_model.layers["2"].parameters())
    state = adapter_state_dict(emu_model)
    assert {k.split(".")[1] for k in state if k.startswith("layers.")} == {"0", "5"}
    with torch.no_grad():
        for t in state.values():
            t.add_(0.01)
    target = inject_adapters(full, (0, 5), "lora", params)
    load_adapter_state_dict(target, emulator_to_full(state, emu.manifest))  # strict: same names, same shapes
    assert torch.equal(adapter_state_dict(target)["layers.5.attention.self.query.lora_B.default.weight"],
                       state["layers.5.attention.self.query.lora_B.default.weight"])
    with pytest.raises(EmulatorError, match="cannot be trained on an emulator"):
        inject_adapters(emu.model, (0, 5), "prefix")
