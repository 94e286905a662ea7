"""Server updates (node.train.server): the arithmetic of server momentum, its reproducibility from the finals alone,
the spec's default per data distribution and the chain form of the option."""

import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")

from node.job import DEFAULT_SERVER_UPDATE, JobSpec, SpecError  # noqa: E402
from node.train.adapter_state import canonical_bytes, state_from_bytes  # noqa: E402
from node.train.server import FedAvgM, ServerUpdateError, server_update_for  # noqa: E402
from node.vocab import Distribution, ServerUpdate  # noqa: E402


def _state(seed):
    g = torch.Generator().manual_seed(seed)
    return {"a.w": torch.randn(5, 3, generator=g), "b": torch.randn(4, generator=g)}


def test_none_keeps_the_aggregate():
    mean = canonical_bytes(_state(2))
    assert server_update_for("none").apply(mean, [canonical_bytes(_state(0))]) == mean


def test_fedavgm_is_momentum_read_from_the_two_previous_finals():
    w0, w1, m = _state(0), _state(1), _state(2)
    out = state_from_bytes(server_update_for("fedavgm").apply(canonical_bytes(m), [canonical_bytes(w0),
                                                                                   canonical_bytes(w1)]))
    for k in m:
        want = w1[k].double() + FedAvgM.BETA * (w1[k].double() - w0[k].double()) + (m[k].double() - w1[k].double())
        assert torch.allclose(out[k].double(), want, atol=1e-6)
        assert not torch.allclose(out[k], m[k])  # the momentum moved it beyond the plain aggregate


def test_fedavgm_in_round_0_is_the_aggregate():
    """No previous move yet: the momentum is zero."""
    w0, m = _state(0), _state(2)
    out = state_from_bytes(server_update_for("fedavgm").apply(canonical_bytes(m), [canonical_bytes(w0)]))
    assert all(torch.allclose(out[k], m[k], atol=1e-6) for k in m)


def test_fedavgm_gives_the_same_bytes_in_another_process():
    """Every replica (and a restarted one) computes the final from the same bytes: it must be bit-identical."""
    code = ("import torch, sys; from node.train.adapter_state import canonical_bytes as c;"
            "from node.train.server import server_update_for as f; from node.hashing import keccak_hex as h;"
            "s = lambda i: (lambda g: {'a.w': torch.randn(5, 3, generator=g), 'b': torch.randn(4, generator=g)})"
            "(torch.Generator().manual_seed(i));"
            "print(h(f('fedavgm').apply(c(s(2)), [c(s(0)), c(s(1))])))")
    from node.hashing import keccak_hex

    here = keccak_hex(server_update_for("fedavgm").apply(canonical_bytes(_state(2)),
                                                         [canonical_bytes(_state(0)), canonical_bytes(_state(1))]))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"OMP_NUM_THREADS": "2", "PATH": "/usr/bin:/bin"}, cwd=".")
    assert out.stdout.strip() == here


def test_unknown_server_update_is_a_one_line_error():
    with pytest.raises(ServerUpdateError, match="unknown server update 'fedadam'.*none, fedavgm"):
        server_update_for("fedadam")


SPEC = """
[model]
id = "minilm"
[data]
dataset = "sst2"
path = "data/sst2/train.tsv"
distribution = "{dist}"
[task]
kind = "sequence-classification"
num_labels = 2
[method]
name = "lora"
[shards]
layers = [[0, 6]]
memory_mb = [1024]
[training]
rounds = 2
sync_interval = 3
learning_rate = 0.001
{extra}
"""


@pytest.mark.parametrize("dist", list(Distribution))
def test_a_spec_without_a_server_update_gets_its_distributions_default(dist):
    spec = JobSpec.from_text(SPEC.format(dist=dist.value, extra=""))
    assert spec.training.server_update == DEFAULT_SERVER_UPDATE[dist]


def test_a_spec_may_name_its_server_update():
    spec = JobSpec.from_text(SPEC.format(dist="dirichlet", extra='server_update = "fedavgm"'))
    assert spec.training.server_update == ServerUpdate.FEDAVGM


def test_the_server_update_goes_on_chain_as_its_code():
    spec = JobSpec.from_text(SPEC.format(dist="dirichlet", extra='server_update = "fedavgm"'))
    spec = spec.with_hashes("0x" + "11" * 32, "0x" + "22" * 32)
    assert spec.to_chain_params()["serverUpdate"] == ServerUpdate.FEDAVGM.code == 1
    assert JobSpec.from_text(SPEC.format(dist="iid", extra="")).with_hashes(
        "0x" + "11" * 32, "0x" + "22" * 32).to_chain_params()["serverUpdate"] == 0


def test_a_bad_server_update_names_the_field():
    with pytest.raises(SpecError, match="training.server_update"):
        JobSpec.from_text(SPEC.format(dist="iid", extra='server_update = "fedadam"'))
