"""One training step, the same for the local trainer, every pipeline stage and every FedPEAT device.

``make_optimizer`` (AdamW over the trainable parameters in name order, no weight decay, no gradient
clipping: both are per-parameter, so per-shard optimizers step exactly like one whole-model optimizer),
``lr_at`` (warm-up then linear decay), ``loss_fn``, and the step itself: ``begin_step`` sets the learning
rate and clears the gradients, the caller runs forward and backward over its micro-batches (the mean over
micro-batches is the step's gradient), ``finish_step`` steps the optimizer. ``train_step`` is that step
on a whole model; ``node.train.pipeline.ShardTrainer`` is the same step spread over stages.

Dropout is off in training: every trainer keeps its model in eval mode, so the forward pass is a pure
function of the weights and the batch, which is what lets a pipeline of processes reproduce the whole
model exactly (docs/results.md, "Dropout", has the measurement behind that choice).
"""

from __future__ import annotations

from node.train.build import trainable_parameters
from node.train.device import autocast
from node.train.errors import TrainError

WARMUP_FRACTION = 0.06


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


def begin_step(optimizer, lr: float | None) -> None:
    """Start a step: set the step's learning rate (None keeps the optimizer's) and clear the gradients."""
    if lr is not None:
        for group in optimizer.param_groups:
            group["lr"] = lr
    optimizer.zero_grad(set_to_none=True)


def finish_step(optimizer, clip_grad_norm: float | None = None) -> None:
    """End a step: (optionally clip and) apply the accumulated gradients."""
    if clip_grad_norm:
        import torch

        params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        torch.nn.utils.clip_grad_norm_(params, clip_grad_norm)
    optimizer.step()


def train_step(model, optimizer, batch: dict, task: str, device: str, lr: float, n_micro: int = 1) -> float:
    """One optimizer step on ``batch``: mean loss over ``n_micro`` micro-batches; returns that loss."""
    begin_step(optimizer, lr)
    total = 0.0
    for mb in micro_batches(batch, n_micro):
        with autocast(device):
            logits = forward(model, mb, device)
        loss = loss_fn(logits, mb, task) / n_micro
        loss.backward()
        total += float(loss.detach())
    finish_step(optimizer)
    return total
