"""Distilling an emulator's kept middle layers toward the full model's middle on unlabelled text.

Offsite-Tuning's "NLP emulator" step: after layer drop, the kept middle layers are trained so that the
hidden state entering the last adapter-bearing layer matches the full model's (mean squared error over real
tokens). Everything else in the emulator stays frozen. The teacher is the full model, run without gradients.
A handful of lines on top of torch; no library does this surgery-specific distillation.
"""

from __future__ import annotations

from typing import Iterable

from dataclasses import replace

from node.emulator.build import Emulator, EmulatorError, emulator_hash, find_layers, layer_at


def _capture_input(model, layer_index: int, store: dict):
    _, layers = find_layers(model)

    def pre_hook(module, args, kwargs):
        store["h"] = args[0] if args else kwargs["hidden_states"]

    return layer_at(layers, layer_index).register_forward_pre_hook(pre_hook, with_kwargs=True)


def distill_emulator(emulator: Emulator, teacher, batches: Iterable[dict], *, steps: int, lr: float = 1e-4) -> list[float]:
    """Train the emulator's kept middle layers for ``steps`` batches; returns the loss per step.

    Updates ``emulator.model`` in place and its manifest (``distill_steps``) and hash.
    """
    import torch

    if steps < 0:
        raise EmulatorError(f"distillation steps must be >= 0, got {steps}")
    m = emulator.manifest
    if not m.kept_middle or steps == 0:
        return []
    last_adapters = [i for i in m.adapter_layers if i > max(m.middle_layers)]
    if not last_adapters:
        raise EmulatorError("distillation needs adapter layers after the middle")
    target_full = min(last_adapters)
    target_emu = m.emulator_index(target_full)
    student = emulator.model
    _, s_layers = find_layers(student)
    kept_emu = {m.emulator_index(i) for i in m.kept_middle}
    saved = {n: p.requires_grad for n, p in student.named_parameters()}
    for p in student.parameters():
        p.requires_grad_(False)
    params = []
    for j in kept_emu:
        for p in layer_at(s_layers, j).parameters():
            p.requires_grad_(True)
            params.append(p)
    opt = torch.optim.AdamW(params, lr=lr)
    t_store: dict = {}
    s_store: dict = {}
    th = _capture_input(teacher, target_full, t_store)
    sh = _capture_input(student, target_emu, s_store)
    was_t, was_s = teacher.training, student.training
    teacher.eval()
    student.train()
    losses: list[float] = []
    try:
        it = iter(batches)
        for _ in range(steps):
            try:
                batch = next(it)
            except StopIteration:
                raise EmulatorError(f"distillation ran out of batches after {len(losses)} of {steps} steps") from None
            inputs = {k: v for k, v in batch.items() if k != "labels"}
            with torch.no_grad():
                teacher(**inputs)
            student(**inputs)
            mask = inputs.get("attention_mask")
            diff = (s_store["h"].float() - t_store["h"].float()) ** 2
            if mask is not None:
                w = mask.unsqueeze(-1).to(diff.dtype)
                loss = (diff * w).sum() / (w.sum() * diff.shape[-1])
            else:
                loss = diff.mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
    finally:
        th.remove()
        sh.remove()
        teacher.train(was_t)
        student.train(was_s)
        for n, p in student.named_parameters():
            p.requires_grad_(saved[n])
    emulator.manifest = replace(m, distill_steps=m.distill_steps + steps)
    emulator.digest = emulator_hash(student, emulator.manifest)
    return losses
