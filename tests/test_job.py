"""JobSpec: validation with the field at fault, hashing of the exact text, the on-chain form."""

import pytest

from node.job import JobSpec, SpecError

GOOD = """
name = "minilm-sst2"
[model]
id = "minilm"
weights_hash = "0x%s"
[data]
dataset = "sst2"
path = "data/sst2/train.tsv"
hash = "0x%s"
distribution = "dirichlet"
alpha = 0.3
[task]
kind = "sequence-classification"
num_labels = 2
[method]
name = "houlsby"
config = { bottleneck = 32 }
[shards]
layers = [[0, 3], [3, 6]]
memory_mb = [900, 700]
min_replicas = 2
[training]
rounds = 3
sync_interval = 10
batch_size = 16
micro_batches = 2
learning_rate = 1e-3
seed = 7
aggregation = "median"
""" % ("ab" * 32, "cd" * 32)


def test_valid_spec_maps_to_chain_params():
    spec = JobSpec.from_text(GOOD)
    params = spec.to_chain_params()
    assert params["layerBounds"] == [0, 3, 6]
    assert params["shardMemoryMB"] == [900, 700]
    assert params["distribution"] == 1 and params["distributionParam"] == 300
    assert params["aggregation"] == 1
    assert params["learningRateE9"] == 1_000_000
    assert params["specHash"].hex() == spec.spec_hash()[2:]
    spec.check_against_chain(params)


def test_hash_is_of_the_exact_text():
    a = JobSpec.from_text(GOOD)
    b = JobSpec.from_text(GOOD + "\n# a comment changes the bytes\n")
    assert a.model_dump() == b.model_dump()
    assert a.spec_hash() != b.spec_hash()
    assert JobSpec.from_text(GOOD).spec_hash() == a.spec_hash()


@pytest.mark.parametrize(
    "broken, field",
    [
        (GOOD.replace("rounds = 3", "rounds = 0"), "training.rounds"),
        (GOOD.replace('name = "houlsby"', 'name = "dora"'), "method.name"),
        (GOOD.replace("layers = [[0, 3], [3, 6]]", "layers = [[0, 3], [4, 6]]"), "shards.layers"),
        (GOOD.replace("memory_mb = [900, 700]", "memory_mb = [900]"), "shards"),
        (GOOD.replace("micro_batches = 2", "micro_batches = 3"), "training"),
        (GOOD.replace('weights_hash = "0x', 'weights_hash = "0xzz'), "model.weights_hash"),
        (GOOD.replace("[task]", "[task]\nbogus = 1"), "task.bogus"),
    ],
)
def test_bad_field_is_named(broken, field):
    with pytest.raises(SpecError) as err:
        JobSpec.from_text(broken, source="spec.toml")
    message = str(err.value)
    assert message.startswith(f"spec.toml: {field}")
    assert "\n" not in message


def test_not_toml_and_missing_file(tmp_path):
    with pytest.raises(SpecError, match="not valid TOML"):
        JobSpec.from_text("[model\nid=1")
    with pytest.raises(SpecError, match="cannot read spec"):
        JobSpec.from_toml(tmp_path / "absent.toml")


def test_chain_params_need_hashes():
    spec = JobSpec.from_text(GOOD.replace('weights_hash = "0x' + "ab" * 32 + '"', ""))
    with pytest.raises(SpecError, match="model.weights_hash"):
        spec.to_chain_params()
    filled = spec.with_hashes(weights_hash="0x" + "11" * 32)
    assert filled.to_chain_params()["baseModelHash"] == bytes.fromhex("11" * 32)
    assert filled.spec_hash() != spec.spec_hash()
