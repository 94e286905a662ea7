"""The local trainer: one process trains the whole model (one shard over all layers) from a job spec.

It is the reference the distributed session must match exactly, so it is built from small public
pieces that the shard trainer reuses rather than one monolith:

- ``build_data(spec)``: tokenizer and the (train, validation) sets; ``batch_indices`` (node.train.data)
  gives each step's examples from the seed alone;
- ``build_model(spec, start, end)``: a shard with the spec's method injected and its adapter
  initialised by ``init_adapter_state`` — layer i's initial adapter depends only on (seed, i), never on
  how the layers are cut into shards, so the pipeline starts from the same weights;
- ``loss_fn(logits, batch, task)``, ``make_optimizer(model, lr)`` (AdamW over the trainable parameters
  in name order, no weight decay, no gradient clipping: both are per-parameter, so per-shard optimizers
  step exactly like one whole-model optimizer), ``lr_at(step, total, base)`` (warm-up then linear decay);
- ``micro_batches(batch, n)`` and ``train_step(...)``: the gradient of a step is the mean over micro-batches.

Dropout is off during training (the model is kept in eval mode): the forward pass is then a pure
function of the weights and the batch, which is what lets a pipeline of processes reproduce it.
On CUDA the forward runs under bf16 autocast; on CPU in fp32.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from node.errors import BsnsError
from node.train import data as D
from node.train.adapter_state import save_adapter

EVAL_BATCH = 128
WARMUP_FRACTION = 0.06


class TrainError(BsnsError):
    """A training run that cannot start or continue (bad device, method, or model)."""


# ---------------------------------------------------------------------------------------------------
# Set-up pieces


def resolve_device(device: str | None) -> str:
    """'cpu' or 'cuda'; ``None``/'auto' picks CUDA when present."""
    import torch

    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda"):
        raise TrainError(f"unknown device {device!r}; expected cpu, cuda or auto")
    if device == "cuda" and not torch.cuda.is_available():
        raise TrainError("--device cuda: no CUDA device is available on this machine")
    return device


def resolve_model_path(model_id: str) -> str:
    """The local directory of a model id (the alias 'minilm' names the offline all-MiniLM-L6-v2 package)."""
    from node.model import resolve_model_path as resolve

    return str(resolve(model_id))


@dataclass
class TrainData:
    tokenizer: object
    train: D.TokenizedSet
    val: D.TokenizedSet
    task: str


def build_data(spec, train_limit: int | None = None) -> TrainData:
    """Tokenizer and (train, validation) sets for the spec; checks ``data.hash`` when the spec has one."""
    path = D.resolve_data_path(spec.data.path)
    if spec.data.hash and D.file_hash(path) != spec.data.hash.lower():
        raise D.DataError(f"data file {path} does not match data.hash {spec.data.hash}")
    tok = D.load_tokenizer(resolve_model_path(spec.model.id))
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
    if spec.method.name != "full":
        from node.tuners import get_method

        method = get_method(spec.method.name)
        try:
            method.config_class(**spec.method.config)
        except BsnsError as exc:
            raise TrainError(f"method.config: {exc}") from None
        except (TypeError, ValueError) as exc:
            raise TrainError(f"method.config: {str(exc).splitlines()[0]}") from None
    D.resolve_data_path(spec.data.path)
    from node.model import model_layer_count

    n = model_layer_count(resolve_model_path(spec.model.id))
    if spec.shards.layers[-1][1] != n:
        raise TrainError(f"shards.layers ends at layer {spec.shards.layers[-1][1]}, "
                         f"but model {spec.model.id!r} has {n} layers")


def layer_seed(seed: int, layer: int) -> int:
    """The torch seed for initialising one layer's adapter (and the head, as layer -1)."""
    from eth_utils import keccak

    return int.from_bytes(keccak(f"bsns-init-v1|{int(seed)}|{int(layer)}".encode())[:8], "big") >> 1


def load_base(spec, start: int, end: int | None, device: str, dtype):
    """Layers [start, end) of the spec's model, no method injected (load errors as one-line BsnsErrors)."""
    from node.model import load_shard

    try:
        return load_shard(resolve_model_path(spec.model.id), start=start, end=end, task=spec.task.kind,
                          num_labels=spec.task.num_labels, dtype=dtype, device=device)
    except BsnsError:
        raise
    except (OSError, ValueError, KeyError) as exc:
        raise TrainError(f"cannot load model {spec.model.id!r}: {str(exc).splitlines()[0]}") from None


def inject_method(shard, spec) -> None:
    """Inject the spec's method into ``shard`` (or, for 'full', make every parameter trainable)."""
    if spec.method.name == "full":
        for p in shard.parameters():
            p.requires_grad_(True)
        return
    from node.tuners import get_method

    method = get_method(spec.method.name)
    try:
        cfg = method.config_class(**spec.method.config)
    except BsnsError:
        raise
    except (TypeError, ValueError) as exc:
        raise TrainError(f"method.config: {str(exc).splitlines()[0]}") from None
    method.inject(shard, cfg)


def trainable_state(shard, spec) -> dict:
    """The state that is trained, saved and hashed: the adapter's parameters (all of them for 'full')."""
    if spec.method.name == "full":
        return {n: p for n, p in shard.named_parameters()}
    from node.tuners import adapter_state_dict

    return adapter_state_dict(shard)


def load_trainable_state(shard, spec, state: dict) -> None:
    import torch

    if spec.method.name == "full":
        params = dict(shard.named_parameters())
        missing = set(params) ^ set(state)
        if missing:
            raise TrainError(f"state does not fit the model: {sorted(missing)[:3]}")
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(state[n])
        return
    from node.tuners import load_adapter_state_dict

    load_adapter_state_dict(shard, state)


def init_adapter_state(spec, start: int, end: int, seed: int, dtype=None) -> dict:
    """The initial trainable state of layers [start, end): layer i's part is drawn in a one-layer shard
    under ``layer_seed(seed, i)``, so it is the same whichever shard layout holds layer i."""
    import torch

    dtype = dtype or torch.float32
    state: dict = {}
    for i in range(start, end):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(layer_seed(seed, i))
            one = load_base(spec, i, i + 1, "cpu", dtype)
            inject_method(one, spec)
            part = trainable_state(one, spec)
        for k, v in part.items():
            state[k] = v.detach().clone()
        del one
    return state


def build_model(spec, start: int = 0, end: int | None = None, device: str = "cpu", seed: int | None = None):
    """A shard over [start, end) with the method injected and the seeded initial adapter loaded.

    Returns the shard in eval mode (dropout off); its trainable parameters have ``requires_grad``.
    """
    import torch

    from node.model import model_layer_count

    n_layers = model_layer_count(resolve_model_path(spec.model.id))
    end = n_layers if end is None else end
    if not 0 <= start < end <= n_layers:
        raise TrainError(f"layer range [{start}, {end}) is outside the model's {n_layers} layers")
    seed = spec.training.seed if seed is None else seed
    init = init_adapter_state(spec, start, end, seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(layer_seed(seed, -1))
        shard = load_base(spec, start, end, "cpu", torch.float32)
        inject_method(shard, spec)
    load_trainable_state(shard, spec, init)
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


def make_optimizer(model, lr: float):
    """AdamW over the trainable parameters (name order), betas (0.9, 0.999), eps 1e-8, no weight decay."""
    import torch

    params = [p for _, p in trainable_parameters(model)]
    if not params:
        raise TrainError("the model has no trainable parameters")
    return torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)


def lr_at(step: int, total_steps: int, base_lr: float) -> float:
    """Learning rate of step ``step`` (0-based): linear warm-up over 6% of the steps, then linear decay to 0."""
    warmup = max(1, int(total_steps * WARMUP_FRACTION))
    if step < warmup:
        return base_lr * (step + 1) / warmup
    return base_lr * max(0.0, (total_steps - step) / max(1, total_steps - warmup))


def autocast(device: str):
    """bf16 autocast on CUDA; nothing on CPU (fp32)."""
    import torch

    if device == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


# ---------------------------------------------------------------------------------------------------
# Step pieces


def loss_fn(logits, batch: dict, task: str):
    """Mean cross-entropy: over examples (classification) or over predicted tokens (causal LM).

    For causal LM, positions a prompt was prepended at (logits longer than the labels) are dropped.
    """
    import torch.nn.functional as F

    labels = batch["labels"].to(logits.device)
    logits = logits.float()
    if task == "sequence-classification":
        return F.cross_entropy(logits, labels)
    logits = logits[:, -labels.shape[1]:, :]
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                           ignore_index=-100)


def micro_batches(batch: dict, n: int) -> list[dict]:
    """Split a batch into ``n`` consecutive equal micro-batches (n must divide the batch size)."""
    size = batch["input_ids"].shape[0]
    if size % n:
        raise TrainError(f"{n} micro-batches do not divide a batch of {size}")
    m = size // n
    return [{k: v[i * m:(i + 1) * m] for k, v in batch.items()} for i in range(n)]


def forward(model, batch: dict, device: str):
    return model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device))


def train_step(model, optimizer, batch: dict, task: str, device: str, lr: float, n_micro: int = 1) -> float:
    """One optimizer step on ``batch``: mean loss over ``n_micro`` micro-batches; returns that loss."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.zero_grad(set_to_none=True)
    total = 0.0
    for mb in micro_batches(batch, n_micro):
        with autocast(device):
            logits = forward(model, mb, device)
        loss = loss_fn(logits, mb, task) / n_micro
        loss.backward()
        total += float(loss.detach())
    optimizer.step()
    return total


def evaluate(model, val: D.TokenizedSet, task: str, device: str, batch_size: int = EVAL_BATCH) -> dict:
    """Validation metrics: accuracy and mean loss (classification) or perplexity and loss (causal LM)."""
    import math

    import torch
    import torch.nn.functional as F

    was_training = model.training
    model.eval()
    correct, loss_sum, count = 0, 0.0, 0
    with torch.no_grad():
        for idx in D.eval_batches(len(val), batch_size):
            batch = val.collate(idx)
            with autocast(device):
                logits = forward(model, batch, device)
            logits = logits.float()
            labels = batch["labels"].to(logits.device)
            if task == "sequence-classification":
                loss_sum += float(F.cross_entropy(logits, labels, reduction="sum"))
                correct += int((logits.argmax(-1) == labels).sum())
                count += labels.shape[0]
            else:
                logits = logits[:, -labels.shape[1]:, :]
                tgt = labels[:, 1:].reshape(-1)
                loss_sum += float(F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), tgt,
                                                  ignore_index=-100, reduction="sum"))
                count += int((tgt != -100).sum())
    model.train(was_training)
    mean = loss_sum / max(1, count)
    if task == "sequence-classification":
        return {"accuracy": correct / max(1, count), "loss": mean, "examples": count}
    return {"perplexity": math.exp(min(mean, 50.0)), "loss": mean, "tokens": count}


def evaluate_adapter(spec, state: dict | None, device: str | None = None) -> dict:
    """Validation metrics of the spec's whole model with ``state`` (every shard's adapter, merged) plugged in;
    ``state`` None scores the seeded initial adapter. What a published adapter's accuracy means."""
    dev = resolve_device(device)
    if spec.fedpeat is not None:
        # a FedPEAT adapter lives on the adapter-bearing layers only (node.emulator owns that layout)
        from node.emulator.spec import adapt, load_full_model
        from node.tuners import load_adapter_state_dict

        model = adapt(spec, load_full_model(spec, dev))
        if state is not None:
            load_adapter_state_dict(model, {k: v.to(dev) for k, v in state.items()})
        model.eval()
    else:
        model = build_model(spec, 0, None, dev)
        if state is not None:
            load_trainable_state(model, spec, state)
    data = build_data(spec, train_limit=1)  # only the validation split is needed
    return evaluate(model, data.val, spec.task.kind, dev)


# ---------------------------------------------------------------------------------------------------
# The trainer


@dataclass
class TrainResult:
    method: str
    steps: int
    batch_size: int
    seed: int
    device: str
    trainable_params: int
    total_params: int
    train_seconds: float
    final_train_loss: float
    metrics: dict
    adapter_hash: str | None = None
    adapter_path: str | None = None
    spec_hash: str | None = None
    losses: list[float] = field(default_factory=list)
    curve: list[dict] = field(default_factory=list)  # validation metrics every ``eval_every`` steps

    @property
    def trainable_percent(self) -> float:
        return 100.0 * self.trainable_params / max(1, self.total_params)


class LocalTrainer:
    """Trains the whole model for ``steps`` optimizer steps (default: rounds × sync_interval)."""

    def __init__(self, spec, steps: int | None = None, device: str | None = None, train_limit: int | None = None,
                 seed: int | None = None):
        if seed is not None:  # same spec, another seed: a second sample of the same experiment
            spec = spec.model_copy(update={"training": spec.training.model_copy(update={"seed": seed})})
        self.spec = spec
        self.device = resolve_device(device)
        self.steps = steps if steps is not None else spec.training.rounds * spec.training.sync_interval
        if self.steps < 1:
            raise TrainError(f"steps must be at least 1, got {self.steps}")
        check_spec(spec)  # cheap checks first: a bad spec fails before any data or weights are read
        self.data = build_data(spec, train_limit=train_limit)
        self.model = build_model(spec, 0, None, self.device)
        self.optimizer = make_optimizer(self.model, spec.training.learning_rate)

    def batches(self):
        t = self.spec.training
        for idx in D.batch_indices(len(self.data.train), t.batch_size, t.seed, self.steps):
            yield self.data.train.collate(idx)

    def run(self, on_step: Callable[[int, float], None] | None = None, eval_every: int | None = None) -> TrainResult:
        """Train; with ``eval_every`` also evaluate every that many steps (one run gives the learning curve)."""
        t = self.spec.training
        curve: list[dict] = []
        trainable, total = count_parameters(self.model)
        losses: list[float] = []
        start = time.perf_counter()
        for step, batch in enumerate(self.batches()):
            lr = lr_at(step, self.steps, t.learning_rate)
            loss = train_step(self.model, self.optimizer, batch, self.data.task, self.device, lr, t.micro_batches)
            if loss != loss:  # NaN
                raise TrainError(f"training diverged at step {step} (loss is NaN); lower the learning rate")
            losses.append(loss)
            if eval_every and (step + 1) % eval_every == 0 and step + 1 < self.steps:
                eval_start = time.perf_counter()
                curve.append({"step": step + 1, **evaluate(self.model, self.data.val, self.data.task, self.device)})
                start += time.perf_counter() - eval_start  # the reported time is training time only
            if on_step:
                on_step(step, loss)
        if self.device == "cuda":
            import torch

            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        metrics = evaluate(self.model, self.data.val, self.data.task, self.device)
        if eval_every:
            curve.append({"step": self.steps, **metrics})
        tail = losses[-min(20, len(losses)):]
        return TrainResult(self.spec.method.name, self.steps, t.batch_size, t.seed, self.device, trainable, total,
                           seconds, sum(tail) / len(tail), metrics, spec_hash=self.spec.spec_hash(), losses=losses, curve=curve)

    def state(self) -> dict:
        return trainable_state(self.model, self.spec)

    def save(self, out_dir: str | Path, result: TrainResult) -> TrainResult:
        """Write ``adapter.safetensors`` (canonical bytes) and ``result.json`` (hash, metrics, spec) to ``out_dir``."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        result.adapter_hash = save_adapter(self.state(), out / "adapter.safetensors")
        result.adapter_path = str(out / "adapter.safetensors")
        (out / "spec.toml").write_text(self.spec.toml_text, encoding="utf-8")
        info = asdict(result)
        info.pop("losses")
        info["method_config"] = self.spec.method.config
        info["model"] = self.spec.model.id
        (out / "result.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        return result
