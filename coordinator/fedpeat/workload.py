"""The FedPEAT workload: model, data, adapters, local training, evaluation and device-memory measurement.

One object holds what every experiment shares: the pretrained model as one ``node.model`` shard over all
layers (kept pristine in memory and copied, never reloaded), its tokenizer, the tokenised SST-2 split
(``node.train.data``), and a cache of emulators by retention. Adapters are a ``node.tuners`` method (LoRA by
default) on the adapter-bearing layers only, with the task head trainable; their names carry the global
layer index, so one adapter state fits the full shard and every emulator.

Peak device memory is measured, not estimated: model weights and buffers + gradients and the two AdamW
moments of the trainable parameters + the bytes autograd saves for backward during one real training step
(``torch.autograd.graph.saved_tensors_hooks``, counted once per storage, parameters excluded).

Devices train with the one training step every bsns trainer takes (``node.train.step``, dropout off). Every step
that draws random numbers (adapter initialisation, distillation's dropout) runs under its own seed in a forked
torch RNG (``seeded``), so a run's numbers do not depend on what ran before it in the process, and nothing it does
shifts the random stream of what runs after.
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass, field
from typing import Any

from node.errors import BsnsError

LORA_TARGETS = ("query", "key", "value", "dense")


class FedPEATError(BsnsError):
    """A FedPEAT run or experiment cannot go ahead with the given options."""


@contextlib.contextmanager
def seeded(seed: int):
    """Run the block on torch's RNG seeded with ``seed`` (CPU and CUDA), restoring the outer stream afterwards."""
    import torch

    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(int(seed) % 2**63)
        yield


@dataclass
class WorkloadConfig:
    model: str = ""                 # local path or hub id; "" = all-MiniLM-L6-v2 from its PyPI package
    max_length: int = 48
    train_limit: int = 8000         # SST-2 training examples tokenised (the first N of the seeded split)
    eval_size: int = 872            # validation examples scored (the fixed 872-sentence split)
    batch_size: int = 16
    lr: float = 1e-3
    method: str = "lora"            # a node.tuners method that lives in the layers: lora, houlsby, pfeiffer, ia3
    method_params: dict = field(default_factory=dict)
    lora_rank: int = 8
    k: int = 1                      # adapter-bearing layers at each end
    rule: str = "uniform"
    distill_steps: int = 0
    distill_lr: float = 1e-4
    seed: int = 0


@dataclass
class Workload:
    cfg: WorkloadConfig
    base: Any = None
    tokenizer: Any = None
    train_set: Any = None
    val_set: Any = None
    emulators: dict = field(default_factory=dict)
    _mem_cache: dict = field(default_factory=dict)
    spec: Any = None                # a FedPEAT job spec: emulators and adapters are then the spec's (node.emulator.spec)

    @classmethod
    def load(cls, cfg: WorkloadConfig) -> "Workload":
        import transformers

        from node.model import load_shard, resolve_model_path
        from node.train.data import load_tokenizer, sst2_sets

        transformers.logging.set_verbosity_error()
        model_id = cfg.model or "minilm"
        # the whole model as one node.model shard; the new task head's initialisation is part of the seed
        base = load_shard(model_id, 0, None, task="sequence-classification", num_labels=2, head_seed=cfg.seed)
        tok = load_tokenizer(str(resolve_model_path(model_id)))
        train, val = sst2_sets(tok, cfg.max_length, train_limit=cfg.train_limit)
        if cfg.eval_size < len(val):
            val = val.subset(list(range(cfg.eval_size)))
        w = cls(cfg=cfg, base=base, tokenizer=tok, train_set=train, val_set=val)
        w.base.eval()
        return w

    @classmethod
    def from_spec(cls, spec, eval_size: int | None = None, train_limit: int | None = None) -> "Workload":
        """The workload of a FedPEAT job spec: its model, data, method and seed; emulators from
        ``emulator_for_spec`` and adapters from ``adapt``, so hashes and initial adapters are the daemons'."""
        import transformers

        from node.train.build import load_full_model
        from node.train.build import build_data

        transformers.logging.set_verbosity_error()
        fp = spec.fedpeat
        cfg = WorkloadConfig(model=spec.model.id, max_length=spec.data.max_seq_len, batch_size=spec.training.batch_size,
                             lr=spec.training.learning_rate, method=spec.method.name,
                             method_params=dict(spec.method.config), k=fp.k, rule=fp.rule,
                             distill_steps=fp.distill_steps, seed=spec.training.seed)
        data = build_data(spec, train_limit=train_limit)
        val = data.val
        if eval_size is not None and eval_size < len(val):
            val = val.subset(list(range(eval_size)))
        cfg.eval_size, cfg.train_limit = len(val), len(data.train)
        base = load_full_model(spec)
        base.eval()
        return cls(cfg=cfg, base=base, tokenizer=data.tokenizer, train_set=data.train, val_set=val, spec=spec)

    @property
    def method_params(self) -> dict:
        params = {"r": self.cfg.lora_rank, "alpha": 2.0 * self.cfg.lora_rank} if self.cfg.method == "lora" else {}
        if self.cfg.method == "lora" and self.base.family == "bert":
            params["target_modules"] = list(LORA_TARGETS)  # every linear map of the adapter layers
        return {**params, **self.cfg.method_params}

    def _batch(self, data, indices: list[int]) -> dict:
        dev = next(self.base.parameters()).device
        return {k: v.to(dev) for k, v in data.collate(indices).items()}

    @staticmethod
    def loss_and_logits(model, batch: dict):
        import torch.nn.functional as F

        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        return F.cross_entropy(logits.float(), batch["labels"]), logits

    # ---- models -------------------------------------------------------------------------------
    def full_model(self):
        return copy.deepcopy(self.base)

    def emulator(self, retention: float):
        """The (cached) emulator at this retention, built with the workload's rule and distillation."""
        from node.emulator import build_emulator, distill_emulator

        key = round(float(retention), 6)
        if key not in self.emulators and self.spec is not None:
            from node.emulator.spec import emulator_for_spec

            self.emulators[key] = emulator_for_spec(self.spec, float(retention), base=self.base)
        if key not in self.emulators:
            calib = None
            if self.cfg.rule == "importance":
                calib = [self._batch(self.train_set, list(range(i, i + self.cfg.batch_size)))
                         for i in range(0, 4 * self.cfg.batch_size, self.cfg.batch_size)]
            emu = build_emulator(self.base, retention=retention, k=self.cfg.k, rule=self.cfg.rule, calibration=calib,
                                 base_model=self.cfg.model or "minilm")
            if self.cfg.distill_steps:
                with seeded(self.cfg.seed * 7919 + 17):  # distillation's dropout
                    distill_emulator(emu, self.base, self._unlabelled_batches(), steps=self.cfg.distill_steps,
                                     lr=self.cfg.distill_lr)
            self.emulators[key] = emu
        return self.emulators[key]

    def _unlabelled_batches(self):
        """Training sentences without their labels, from the end of the tokenised split (distillation text)."""
        from node.train.data import batch_indices

        n = len(self.train_set)
        for idx in batch_indices(n, self.cfg.batch_size, self.cfg.seed + 7919, 10 ** 6):
            b = self._batch(self.train_set, idx)
            b.pop("labels")
            yield b

    def with_adapters(self, model, layers):
        """The workload's PEFT method (``node.tuners``) on ``layers`` (global indices); head trainable, rest frozen."""
        from node.emulator import inject_adapters

        if self.spec is not None:  # the spec's adapter layers and initial adapter, as every daemon draws them
            from node.train.build import adapt

            return adapt(self.spec, model)
        # the initial adapter is drawn from the seed alone, whatever ran before (and whichever model gets it)
        with seeded(self.cfg.seed):
            return inject_adapters(model, layers, self.cfg.method, self.method_params)

    @staticmethod
    def adapter_state(model) -> dict:
        from node.tuners import adapter_state_dict

        return adapter_state_dict(model)

    @staticmethod
    def load_adapter_state(model, state: dict) -> None:
        from node.tuners import load_adapter_state_dict

        load_adapter_state_dict(model, state)

    def adapted_full_model(self):
        """The full model with adapters on the adapter-bearing layers (plug-in target and case 3's device model)."""
        from node.train.build import adapter_layer_indices

        return self.with_adapters(self.full_model(), adapter_layer_indices(self.base.n_layers, self.cfg.k))

    def adapted_emulator(self, retention: float):
        emu = self.emulator(retention)
        return self.with_adapters(copy.deepcopy(emu.model), emu.manifest.adapter_layers), emu

    # ---- training and evaluation -------------------------------------------------------------
    def train(self, model, indices: list[int], steps: int, seed: int, lr: float | None = None) -> list[float]:
        """``steps`` steps of the one training step every bsns trainer takes (``node.train.step``: AdamW over the
        trainable parameters, dropout off) on batches drawn (seeded) from ``indices``; returns the losses."""
        from node.train.data import batch_indices
        from node.train.step import make_optimizer, train_step

        if steps <= 0:
            return []
        if len(indices) < self.cfg.batch_size:
            raise FedPEATError(f"a device holds {len(indices)} examples, fewer than one batch of {self.cfg.batch_size}")
        lr = lr if lr is not None else self.cfg.lr
        opt = make_optimizer(model, lr)
        model.eval()
        device = str(next(model.parameters()).device)
        return [train_step(model, opt, self.train_set.collate([indices[i] for i in pos]), "sequence-classification",
                           device, lr)
                for pos in batch_indices(len(indices), self.cfg.batch_size, seed, steps)]

    def evaluate(self, model) -> dict:
        import torch

        from node.train.data import eval_batches

        model.eval()
        total_loss, correct, n = 0.0, 0, 0
        with torch.no_grad():
            for idx in eval_batches(len(self.val_set), 64):
                batch = self._batch(self.val_set, idx)
                loss, logits = self.loss_and_logits(model, batch)
                total_loss += float(loss) * len(idx)
                correct += int((logits.argmax(-1) == batch["labels"]).sum())
                n += len(idx)
        return {"loss": total_loss / n, "accuracy": correct / n}

    def training_memory(self, model, key: Any = None) -> int:
        """Measured bytes a device needs to train ``model`` (see the module docstring); cached by ``key``."""
        if key is not None:
            key = (self.cfg.method, key)  # the adapters change what a device holds
            if key in self._mem_cache:
                return self._mem_cache[key]
        import torch

        weights = sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))
        trainable = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
        param_ptrs = {p.data_ptr() for p in model.parameters()}
        seen: dict[int, int] = {}

        def pack(t):
            st = t.untyped_storage()
            ptr = st.data_ptr()
            if ptr not in param_ptrs:
                seen[ptr] = max(seen.get(ptr, 0), st.nbytes())
            return t

        batch = self._batch(self.train_set, list(range(self.cfg.batch_size)))
        model.eval()  # as it trains: dropout off (node.train.step)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss, _ = self.loss_and_logits(model, batch)
            loss.backward()
        model.zero_grad(set_to_none=True)
        total = weights + 3 * trainable + sum(seen.values())
        if key is not None:
            self._mem_cache[key] = total
        return total
