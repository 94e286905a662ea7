"""The local trainer: one process trains the whole model (one shard over all layers) from a job spec.

It is the reference the distributed session must match exactly, built from the same pieces the pipeline
stages use (``node.train.build`` for the model and data, ``node.train.step`` for the step,
``node.train.evaluate`` for the metrics).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from node.train import data as D
from node.train.adapter_state import save_adapter
from node.train.build import build_data, build_model, check_spec, count_parameters
from node.train.device import resolve_device
from node.train.errors import TrainError
from node.train.evaluate import evaluate
from node.train.step import lr_at, make_optimizer, train_step


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
        from node.tuners import adapter_state_dict

        return adapter_state_dict(self.model)

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
