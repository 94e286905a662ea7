"""A job spec's model and data, built the same way by every trainer.

- ``build_data(spec)``: tokenizer and the (train, validation) sets; ``batch_indices`` (node.train.data)
  gives each step's examples from the seed alone;
- ``build_model(spec, start, end)``: a shard with the spec's method injected and its adapter initialised
  by ``init_adapter_state``: layer i's initial adapter depends only on (seed, i), never on how the layers
  are cut into shards, so the pipeline starts from the same weights as the whole model;
- FedPEAT's layout (``adapter_layers``, ``adapt``, ``load_full_model``): the adapters sit on the first and
  last ``k`` layers only, for every emulator and for the full model, so one adapter state fits all of them;
- ``whole_model(spec)``: the whole model carrying the spec's adapter layout, what a finished adapter is
  evaluated and exported on.

The spec's method is always a registered ``node.tuners`` method (full fine-tuning included), so the state
that is trained, saved and hashed is ``node.tuners.adapter_state_dict`` of the shard.
"""

from __future__ import annotations

from dataclasses import dataclass

from node.errors import BsnsError
from node.hashing import keccak_text
from node.train import data as D
from node.train.errors import TrainError


def _model_path(spec) -> str:
    from node.model import resolve_model_path

    return str(resolve_model_path(spec.model.id))


@dataclass
class TrainData:
    tokenizer: object
    train: D.TokenizedSet
    val: D.TokenizedSet
    task: str


def build_data(spec, train_limit: int | None = None) -> TrainData:
    """Tokenizer and (train, validation) sets for the spec; checks ``data.hash`` when the spec has one."""
    path = D.spec_data_path(spec.data.path)
    if spec.data.hash and D.file_hash(path) != spec.data.hash.lower():
        raise D.DataError(f"data file {path} does not match data.hash {spec.data.hash}")
    tok = D.load_tokenizer(_model_path(spec))
    if spec.task.kind == "sequence-classification":
        if spec.data.validation_size < 1:
            raise D.DataError("data.validation_size must be at least 1 for a classification task")
        train, val = D.sst2_sets(tok, spec.data.max_seq_len, path, val_size=spec.data.validation_size,
                                 train_limit=train_limit)
    else:
        train, val = D.text_blocks(tok, spec.data.max_seq_len, path)
        if train_limit is not None:
            train = train.subset(list(range(min(train_limit, len(train)))))
        if spec.data.validation_size:
            val = val.subset(list(range(min(spec.data.validation_size, len(val)))))
    return TrainData(tok, train, val, spec.task.kind)


def check_spec(spec) -> None:
    """Fail fast on what can be checked without reading data or weights: method config, paths, model."""
    _method_config(spec)
    D.spec_data_path(spec.data.path)
    from node.model import model_layer_count

    n = model_layer_count(_model_path(spec))
    if spec.shards.layers[-1][1] != n:
        raise TrainError(f"shards.layers ends at layer {spec.shards.layers[-1][1]}, "
                         f"but model {spec.model.id!r} has {n} layers")


def layer_seed(seed: int, layer: int) -> int:
    """The torch seed for initialising one layer's adapter (the head is layer -1, FedPEAT's adapter -2)."""
    return int.from_bytes(keccak_text(f"bsns-init-v1|{int(seed)}|{int(layer)}")[:8], "big") >> 1


def load_base(spec, start: int, end: int | None, device: str, dtype):
    """Layers [start, end) of the spec's model, no method injected (load errors as one-line BsnsErrors)."""
    from node.model import load_shard

    try:
        return load_shard(_model_path(spec), start=start, end=end, task=spec.task.kind,
                          num_labels=spec.task.num_labels, dtype=dtype, device=device)
    except BsnsError:
        raise
    except (OSError, ValueError, KeyError) as exc:
        raise TrainError(f"cannot load model {spec.model.id!r}: {str(exc).splitlines()[0]}") from None




def _method_config(spec):
    """The spec's method and its validated config; a bad config is a ``TrainError`` naming the field."""
    from node.tuners import get_method

    method = get_method(spec.method.name)
    try:
        return method, method.config(spec.method.config)
    except BsnsError as exc:
        raise TrainError(f"method.config: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise TrainError(f"method.config: {str(exc).splitlines()[0]}") from None


def inject_method(shard, spec, layers=None) -> None:
    """Inject the spec's method into ``shard`` (on ``layers`` only, when given)."""
    method, cfg = _method_config(spec)
    method.inject(shard, cfg, layers=layers)


def init_adapter_state(spec, start: int, end: int, seed: int, dtype=None) -> dict:
    """The initial trainable state of layers [start, end): layer i's part is drawn in a one-layer shard
    under ``layer_seed(seed, i)``, so it is the same whichever shard layout holds layer i."""
    import torch

    from node.tuners import adapter_state_dict

    dtype = dtype or torch.float32
    state: dict = {}
    for i in range(start, end):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(layer_seed(seed, i))
            one = load_base(spec, i, i + 1, "cpu", dtype)
            inject_method(one, spec)
            part = adapter_state_dict(one)
        state.update(part)
        del one
    return state


def build_model(spec, start: int = 0, end: int | None = None, device: str = "cpu", seed: int | None = None):
    """A shard over [start, end) with the method injected and the seeded initial adapter loaded.

    Returns the shard in eval mode (dropout off); its trainable parameters have ``requires_grad``.
    """
    import torch

    from node.model import model_layer_count
    from node.tuners import load_adapter_state_dict

    n_layers = model_layer_count(_model_path(spec))
    end = n_layers if end is None else end
    if not 0 <= start < end <= n_layers:
        raise TrainError(f"layer range [{start}, {end}) is outside the model's {n_layers} layers")
    seed = spec.training.seed if seed is None else seed
    init = init_adapter_state(spec, start, end, seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(layer_seed(seed, -1))
        shard = load_base(spec, start, end, "cpu", torch.float32)
        inject_method(shard, spec)
    load_adapter_state_dict(shard, init)
    shard.to(device)
    shard.eval()
    return shard


def trainable_parameters(model) -> list:
    """(name, parameter) pairs that get gradients, in name order (the optimizer's order)."""
    return sorted(((n, p) for n, p in model.named_parameters() if p.requires_grad), key=lambda x: x[0])


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for _, p in trainable_parameters(model))
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


# ---------------------------------------------------------------------------------------------------
# FedPEAT's layout: adapters on the first and last k layers (node.emulator builds the emulators around it)


def adapter_layer_indices(num_layers: int, k: int, adapter_layers=None) -> tuple[int, ...]:
    """The adapter-bearing layers: the given ones, or the first and last ``k`` (Offsite-Tuning's default)."""
    if adapter_layers is not None:
        idx = tuple(sorted(set(int(i) for i in adapter_layers)))
        bad = [i for i in idx if not 0 <= i < num_layers]
        if bad:
            raise TrainError(f"adapter layers {bad} are outside the model's {num_layers} layers")
        if not idx:
            raise TrainError("at least one adapter layer is needed")
        return idx
    if k < 1 or 2 * k > num_layers:
        raise TrainError(f"k={k} adapter layers at each end does not fit a model of {num_layers} layers")
    return tuple(range(k)) + tuple(range(num_layers - k, num_layers))


def _fedpeat(spec):
    if getattr(spec, "fedpeat", None) is None:
        raise TrainError(f"job {spec.name!r} has no [fedpeat] table: it is not tuned on emulators")
    return spec.fedpeat


def adapter_layers(spec) -> tuple[int, ...]:
    """Global indices of a FedPEAT spec's adapter-bearing layers (first and last ``k``)."""
    return adapter_layer_indices(spec.shards.layers[0][1], _fedpeat(spec).k)


def load_full_model(spec, device: str = "cpu"):
    """The spec's whole model as one ``node.model`` shard (no adapters), head drawn from ``training.seed``."""
    from node.model import load_shard

    return load_shard(_model_path(spec), 0, None, task=spec.task.kind, num_labels=spec.task.num_labels,
                      head_seed=spec.training.seed, device=device)


def adapt(spec, model):
    """Inject a FedPEAT spec's method on the adapter-bearing layers of ``model`` (an emulator's model or the
    full shard), in place. The initial adapter weights are drawn under a seed of their own, and the tuner only
    sees the adapter layers, so every emulator and the full model start from the same adapter state."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(layer_seed(spec.training.seed, -2))
        inject_method(model, spec, layers=adapter_layers(spec))
    return model


def whole_model(spec, device: str = "cpu"):
    """The whole model with the spec's adapter layout and its seeded initial adapter, in eval mode: what a
    finished adapter (every shard's state, merged) is loaded into to be evaluated or exported."""
    model = adapt(spec, load_full_model(spec, device)) if spec.fedpeat is not None else build_model(spec, 0, None, device)
    model.eval()
    return model
