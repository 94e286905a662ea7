"""Data sets for training: SST-2 classification and causal language modelling on plain text.

Owns: reading the repository's data files, the deterministic validation split, tokenisation with the
model's tokenizer, the deterministic batch order (a function of the seed only), and the content hash
of a data file (keccak-256 of its bytes, the value a job spec carries).

The batch order and the validation split are written by hand (a Fisher-Yates shuffle on
``random.Random(int).random()``, the one stream Python promises to keep across versions, seeded from
keccak-256 of a label, the seed and the epoch) rather than taken from a ``DataLoader`` or
``torch.randperm``, because the distributed session must reproduce them exactly from the seed alone,
on any machine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from node.errors import BsnsError
from node.paths import PACKAGE_ROOT

SST2_PATH = PACKAGE_ROOT / "data" / "sst2" / "train.tsv"
SHAKESPEARE_PATH = PACKAGE_ROOT / "data" / "tinyshakespeare" / "input.txt"

# The validation split is fixed independently of the training seed, so every run (and every method in
# docs/results.md) is scored on the same held-out sentences. 872 is the size of GLUE's SST-2 dev set.
DEFAULT_VAL_SIZE = 872
SPLIT_SEED = 872


class DataError(BsnsError):
    """A data file is missing, unreadable or malformed."""


def file_hash(path: str | Path) -> str:
    """keccak-256 of the file's bytes as 0x-hex (the ``dataset.hash`` of a job spec)."""
    from node.hashing import keccak_hex

    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read data file {p}: {exc.strerror}") from None
    return keccak_hex(data)


def resolve_data_path(path: str | Path) -> Path:
    """A data path as given in a spec: absolute, or relative to the working directory or the repo."""
    p = Path(path)
    if p.exists():
        return p
    if not p.is_absolute() and (PACKAGE_ROOT / p).exists():
        return PACKAGE_ROOT / p
    raise DataError(f"data file not found: {path}")


def spec_data_path(path: str | Path) -> Path:
    """A spec's ``data.path`` resolved (``resolve_data_path``) and confined to the data folders
    (``node.paths.data_dirs``): symlinks and ``..`` are resolved before the check."""
    from node.paths import DATA_DIRS_ENV, data_dirs

    p = resolve_data_path(path).resolve()
    if not any(p.is_relative_to(d) for d in data_dirs()):
        raise DataError(f"data.path: {path} is outside the data folders (the package's data/, <home>/data, "
                        f"${DATA_DIRS_ENV})")
    return p


def read_sst2(path: str | Path = SST2_PATH) -> tuple[list[str], list[int]]:
    """Sentences and labels of an SST-2 ``label<TAB>sentence`` file with a header line."""
    p = resolve_data_path(path)
    sentences: list[str] = []
    labels: list[int] = []
    with open(p, encoding="utf-8") as fh:
        header = fh.readline().rstrip("\n").split("\t")
        if header[:2] != ["label", "sentence"]:
            raise DataError(f"{p}: expected a 'label<TAB>sentence' header, got {header[:2]}")
        for lineno, line in enumerate(fh, start=2):
            line = line.rstrip("\n")
            if not line:
                continue
            label, sep, sentence = line.partition("\t")
            if not sep or label not in ("0", "1"):
                raise DataError(f"{p}:{lineno}: expected '0|1<TAB>sentence'")
            sentences.append(sentence)
            labels.append(int(label))
    if not sentences:
        raise DataError(f"{p}: no examples")
    return sentences, labels


def seeded_permutation(n: int, label: str, *numbers: int) -> list[int]:
    """A permutation of ``range(n)`` that depends only on (n, label, numbers): same in any process."""
    import random

    from node.hashing import keccak_text

    material = "bsns-data-v1|" + label + "|" + "|".join(str(int(x)) for x in numbers)
    rng = random.Random(int.from_bytes(keccak_text(material), "big"))
    perm = list(range(n))
    for i in range(n - 1, 0, -1):
        j = int(rng.random() * (i + 1))
        perm[i], perm[j] = perm[j], perm[i]
    return perm


def split_indices(n: int, val_size: int, seed: int = SPLIT_SEED) -> tuple[list[int], list[int]]:
    """Deterministic (train, validation) index lists, each ascending: a seeded permutation's first
    ``val_size`` entries are held out."""
    if not 0 < val_size < n:
        raise DataError(f"validation size {val_size} must be between 1 and {n - 1}")
    perm = seeded_permutation(n, "split", seed, n)
    return sorted(perm[val_size:]), sorted(perm[:val_size])


class TokenizedSet:
    """A tokenised data set: per-example token id lists (unpadded) and integer targets.

    For classification ``targets[i]`` is the label; for causal LM it is unused (the labels are the
    inputs shifted), and every example has the same length (one block). Built either from token ids,
    or from texts and an ``encoder`` (texts -> id lists) that runs only on the examples a batch asks
    for, so a short run never tokenises the whole data set.
    """

    def __init__(self, input_ids: list[list[int]] | None, targets: list[int], pad_token_id: int, task: str,
                 *, texts: list[str] | None = None, encoder=None):
        if input_ids is None and (texts is None or encoder is None):
            raise ValueError("a TokenizedSet needs input_ids, or texts and an encoder")
        n = len(input_ids) if input_ids is not None else len(texts)
        if len(targets) != n:
            raise ValueError(f"{n} examples but {len(targets)} targets")
        self._ids: list[list[int] | None] = list(input_ids) if input_ids is not None else [None] * n
        self._texts = texts
        self._encoder = encoder
        self.targets = targets
        self.pad_token_id = pad_token_id
        self.task = task  # "sequence-classification" | "causal-lm"

    def __len__(self) -> int:
        return len(self._ids)

    def _ensure(self, indices) -> None:
        todo = sorted({i for i in indices if self._ids[i] is None})
        if todo:
            for i, ids in zip(todo, self._encoder([self._texts[i] for i in todo])):
                self._ids[i] = list(ids)

    def ids(self, i: int) -> list[int]:
        self._ensure([i])
        return self._ids[i]

    @property
    def input_ids(self) -> list[list[int]]:
        """Every example's ids (tokenises whatever has not been yet)."""
        self._ensure(range(len(self)))
        return self._ids

    def collate(self, indices: list[int]) -> dict:
        """A padded batch (right padding to the longest example in the batch) as torch tensors."""
        import torch

        self._ensure(indices)
        rows = [self._ids[i] for i in indices]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for j, r in enumerate(rows):
            ids[j, : len(r)] = torch.tensor(r, dtype=torch.long)
            mask[j, : len(r)] = 1
        batch = {"input_ids": ids, "attention_mask": mask}
        if self.task == "sequence-classification":
            batch["labels"] = torch.tensor([self.targets[i] for i in indices], dtype=torch.long)
        else:
            # causal LM: predict token t+1 from tokens <= t; padding never counts
            labels = ids.clone()
            labels[mask == 0] = -100
            batch["labels"] = labels
        return batch

    def subset(self, indices: list[int]) -> "TokenizedSet":
        out = TokenizedSet([self._ids[i] for i in indices] if self._texts is None else None,
                           [self.targets[i] for i in indices], self.pad_token_id, self.task,
                           texts=[self._texts[i] for i in indices] if self._texts is not None else None,
                           encoder=self._encoder)
        if self._texts is not None:
            out._ids = [self._ids[i] for i in indices]  # keep what is already tokenised
        return out


def load_tokenizer(model_id_or_path: str):
    """The model's tokenizer (local path or hub id), with a pad token guaranteed."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(model_id_or_path)
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot load a tokenizer for model {model_id_or_path!r}: "
                        f"{str(exc).splitlines()[0]}") from None
    if tok.pad_token_id is None:
        # GPT-2 / Llama tokenizers ship without a pad token; padding is masked out anyway
        tok.pad_token = tok.eos_token
    return tok


def sst2_sets(tokenizer, max_length: int, path: str | Path = SST2_PATH, val_size: int = DEFAULT_VAL_SIZE,
              split_seed: int = SPLIT_SEED, train_limit: int | None = None) -> tuple[TokenizedSet, TokenizedSet]:
    """(train, validation) tokenised SST-2 sets; ``train_limit`` keeps the first N training examples."""
    sentences, labels = read_sst2(path)
    train_idx, val_idx = split_indices(len(sentences), val_size, split_seed)
    if train_limit is not None:
        train_idx = train_idx[:train_limit]

    def encoder(texts: list[str]) -> list[list[int]]:
        return tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]

    def encode(idx: list[int]) -> TokenizedSet:
        return TokenizedSet(None, [labels[i] for i in idx], tokenizer.pad_token_id, "sequence-classification",
                            texts=[sentences[i] for i in idx], encoder=encoder)

    return encode(train_idx), encode(val_idx)


def text_blocks(tokenizer, block_size: int, path: str | Path = SHAKESPEARE_PATH, val_fraction: float = 0.1,
                split_seed: int = SPLIT_SEED) -> tuple[TokenizedSet, TokenizedSet]:
    """(train, validation) sets of ``block_size``-token blocks cut from a text file.

    The text is tokenised whole (no special tokens) and cut into consecutive blocks; a seeded
    ``val_fraction`` of the blocks is held out.
    """
    p = resolve_data_path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read text file {p}: {exc}") from None
    if block_size < 2:
        raise DataError(f"block size must be at least 2, got {block_size}")
    ids = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
    n_blocks = len(ids) // block_size
    if n_blocks < 2:
        raise DataError(f"{p}: too short for two blocks of {block_size} tokens")
    blocks = [ids[i * block_size:(i + 1) * block_size] for i in range(n_blocks)]
    val_size = max(1, int(round(n_blocks * val_fraction)))
    train_idx, val_idx = split_indices(n_blocks, val_size, split_seed)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    mk = lambda idx: TokenizedSet([blocks[i] for i in idx], [0] * len(idx), pad, "causal-lm")  # noqa: E731
    return mk(train_idx), mk(val_idx)


def batch_indices(num_examples: int, batch_size: int, seed: int, steps: int,
                  start_step: int = 0) -> Iterator[list[int]]:
    """Example indices of each training step: epoch e is ``seeded_permutation(n, "batches", seed, e)``
    cut into batches.

    A trailing partial batch of each epoch is dropped, so every step has exactly ``batch_size``
    examples and step s's batch depends only on (n, batch_size, seed, s). ``start_step`` resumes.
    """
    if batch_size < 1 or batch_size > num_examples:
        raise DataError(f"batch size {batch_size} must be between 1 and the {num_examples} training examples")
    per_epoch = num_examples // batch_size
    epoch = -1
    perm: list[int] = []
    for step in range(start_step, start_step + steps):
        e, k = divmod(step, per_epoch)
        if e != epoch:
            epoch = e
            perm = seeded_permutation(num_examples, "batches", seed, e)
        yield perm[k * batch_size:(k + 1) * batch_size]


def eval_batches(num_examples: int, batch_size: int) -> Iterator[list[int]]:
    """Validation indices in order, in batches (the last one may be short)."""
    for i in range(0, num_examples, batch_size):
        yield list(range(i, min(i + batch_size, num_examples)))
