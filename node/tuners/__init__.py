"""PEFT methods, one sub-package each with the same shape (config, layer, injection)."""
