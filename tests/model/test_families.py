"""The family registry: every model type is served by one family object, has a tiny checkpoint that the
exactness tests run over, and a family declares what the shard, the loader and the tuners ask of it."""

from __future__ import annotations

import copy
import pickle

import pytest

from node.model import ModelError, family_for_model_type, family_names, get_family, model_types
from node.model.families import Family, register_family

from .tiny import MODEL_TYPES


def test_every_model_type_has_a_tiny_checkpoint_for_the_exactness_tests():
    # a family added without its tiny config would go untested by tests/model and tests/tuners
    assert set(model_types()) == set(MODEL_TYPES)


def test_registry_by_name_and_by_model_type():
    assert {"bert", "gpt2", "llama", "phi3"} <= set(family_names())
    llama = get_family("llama")
    for t in ("llama", "qwen2", "mistral"):
        family = family_for_model_type(t)
        assert family.name == "llama" and isinstance(family, type(llama))
    assert family_for_model_type("llama") is llama
    assert family_for_model_type("phi3") is get_family("phi3")
    with pytest.raises(ModelError, match=r"model type 't5' is not supported \(supported: bert, gpt2, "):
        family_for_model_type("t5")
    with pytest.raises(ModelError, match="unknown model family 'opt'"):
        get_family("opt")


def test_every_family_names_real_parts_of_its_models():
    """Declared paths and tuner targets exist in the Hugging Face models built from the tiny configs."""
    import re

    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    from .tiny import tiny_config

    for model_type in MODEL_TYPES:
        family = family_for_model_type(model_type)
        cfg = tiny_config(model_type)
        for task in family.tasks:
            auto = AutoModelForSequenceClassification if task == "sequence-classification" else AutoModelForCausalLM
            model = auto.from_config(cfg)
            parts = family.parts(model)
            assert parts.layers and len(parts.layers) == cfg.num_hidden_layers
            assert family.head(model, task)[family.head_layer(task)] is not None
            names = dict(model.named_parameters())
            assert family.tied_embedding_key in names, model_type
            layer = dict(parts.layers[0].named_modules())
            assert all(any(n.endswith(t) for n in layer) for t in family.lora_targets), model_type
            assert any(re.fullmatch(family.ia3_targets, n) for n in layer), model_type
            assert any(re.fullmatch(family.ia3_feedforward, n) for n in layer), model_type
            for proj, norm in family.bottleneck_points.values():
                assert proj in layer and norm in layer, (model_type, proj, norm)
            assert re.match(family.hf_layer_pattern(), family.hf_name("layers.3.x"))


def test_a_shard_copy_keeps_the_registered_family():
    family = get_family("gpt2")
    assert copy.deepcopy(family) is family and copy.copy(family) is family
    assert pickle.loads(pickle.dumps(family)) is family


class _Half(Family):
    name = "half"
    model_types = ("half",)


class _Clash(Family):
    name = "clash"
    model_types = ("gpt2",)
    embeddings, layers, word_embeddings = "e", "l", "w"
    lora_targets, ia3_targets, ia3_feedforward = ("q",), "q", "q"
    bottleneck_points = {"ffn": ("o", "n")}


def test_registration_refuses_incomplete_or_clashing_families():
    with pytest.raises(ModelError, match="does not set embeddings, layers, word_embeddings"):
        register_family(_Half())
    with pytest.raises(ModelError, match="model type 'gpt2' is served by two families"):
        register_family(_Clash())
    clash = _Clash()
    clash.name, clash.model_types = "llama", ("clash",)
    with pytest.raises(ModelError, match="model family 'llama' is registered twice"):
        register_family(clash)
    assert "clash" not in family_names() and "clash" not in model_types()
