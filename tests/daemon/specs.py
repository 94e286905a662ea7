"""Job specs the session-runner tests share (tests/daemon and tests/e2e): MiniLM classifying SST-2 in a few steps.

``sst2_spec`` writes the TOML a proposal carries (tomli_w) from the tables that differ between the tests.
"""

import tomli_w

LORA = {"r": 4, "alpha": 8.0, "target_modules": ["query", "value"]}


def sst2_spec(name: str, *, method: str, config: dict, layers: list, memory_mb: list, training: dict,
              data: dict | None = None, task: dict | None = None, shards: dict | None = None,
              fedpeat: dict | None = None) -> str:
    """Spec TOML for ``minilm`` on ``data/sst2/train.tsv`` (16 tokens, 32 validation rows unless ``data`` says)."""
    spec = {
        "name": name,
        "model": {"id": "minilm"},
        "data": {"dataset": "sst2", "path": "data/sst2/train.tsv", "max_seq_len": 16, "validation_size": 32,
                 **(data or {})},
        "task": {"kind": "sequence-classification", **(task or {})},
        "method": {"name": method, "config": config},
        "shards": {"layers": layers, "memory_mb": memory_mb, **(shards or {})},
        "training": training,
    }
    if fedpeat is not None:
        spec["fedpeat"] = fedpeat
    return tomli_w.dumps(spec)
