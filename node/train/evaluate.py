"""Validation metrics: accuracy (classification) or perplexity (causal LM) of a model on a held-back split,
and of a finished adapter on its spec's whole model."""

from __future__ import annotations

from node.train import data as D
from node.train.device import autocast, resolve_device
from node.train.step import forward

EVAL_BATCH = 128


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
    from node.train.build import build_data, whole_model
    from node.tuners import load_adapter_state_dict

    dev = resolve_device(device)
    model = whole_model(spec, dev)
    if state is not None:
        load_adapter_state_dict(model, state)
    data = build_data(spec, train_limit=1)  # only the validation split is needed
    return evaluate(model, data.val, spec.task.kind, dev)
