"""Where training runs: the device a user asked for (CUDA when present) and its precision (bf16 autocast on
CUDA, fp32 on CPU). Every trainer (local, pipeline stage, FedPEAT device) takes both from here."""

from __future__ import annotations

import contextlib

from node.train.errors import TrainError


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


def autocast(device: str):
    """bf16 autocast on CUDA; nothing on CPU (fp32)."""
    import torch

    if str(device).startswith("cuda"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
