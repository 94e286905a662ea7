"""ModelShard: a contiguous range of a transformer's layers that runs forward and backward on its own.

The shard reuses the Hugging Face layer modules unchanged and drives them itself, so it owns what
the full model's ``forward`` would otherwise do around the layers: embeddings (first shard), the
attention mask and position information (every shard), final norm and task head (last shard). What
differs by model family (the embedding forward, rotary positions, attention windows, how the head pools)
it asks its ``arch``, the family object (``node.model.families``).
The 4-D attention mask is built here by hand because a shard sees hidden states, not input ids,
and because prefix tuning adds key/value positions that the library's mask helpers do not know of.

Extension points used by ``node.tuners`` (the shard does not know which method set them):
- ``prompt_encoder(batch_size) -> (b, n, d)``: soft prompt prepended to the word embeddings on the
  first shard; ``num_virtual_tokens`` (set on every shard) lets later shards extend the mask.
- ``prefix_encoder(batch_size) -> {layer_idx: (k, v)}`` with k, v shaped (b, kv_heads, p, head_dim):
  trainable keys/values put in front of each held layer's own.
"""

from __future__ import annotations

import torch
from torch import nn

from node.model.errors import ModelError


class PrefixCache:
    """Duck-types the ``Cache.update`` call that HF attention makes: returns the prefix + own keys/values.

    Nothing is stored between calls, so one instance serves one forward pass.
    """

    def __init__(self, prefixes: dict[int, tuple[torch.Tensor, torch.Tensor]]):
        self.prefixes = prefixes

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        pk, pv = self.prefixes[layer_idx]
        return (
            torch.cat([pk.to(key_states.dtype), key_states], dim=2),
            torch.cat([pv.to(value_states.dtype), value_states], dim=2),
        )

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return 0


class ModelShard(nn.Module):
    """Layers [start, end) of a model; see ``node.model.load_shard`` for how one is built."""

    def __init__(self, config, arch, task: str, start: int, end: int, embeddings, layers: dict,
                 norm, head: dict, rotary):
        super().__init__()
        self.config = config
        self.arch = arch  # the model family (node.model.families.Family)
        self.task = task
        self.start, self.end = start, end
        self.n_layers = config.num_hidden_layers
        self.is_first = start == 0
        self.is_last = end == self.n_layers
        self.embeddings = None
        if self.is_first:
            self.embeddings = embeddings if isinstance(embeddings, nn.Module) else nn.ModuleDict(embeddings)
        # keyed by the global layer index so that parameter names are the same on every replica
        # and the union of all shards' names is the whole model's
        self.layers = nn.ModuleDict({str(i): layer for i, layer in layers.items()})
        self.norm = norm if self.is_last else None
        self.head = nn.ModuleDict(head) if self.is_last else None
        self.rotary_emb = rotary
        self.prompt_encoder = None
        self.prefix_encoder = None
        self.num_virtual_tokens = 0
        self.newly_initialized: list[str] = []

    # ---- naming -------------------------------------------------------------------------
    @property
    def family(self) -> str:
        """The family's name ("bert", "gpt2", "llama", ...), as exports record it."""
        return self.arch.name

    def hf_name(self, name: str) -> str:
        """The full Hugging Face model's name for a shard-local parameter name."""
        return self.arch.hf_name(name)

    @property
    def word_embeddings(self):
        """The token embedding table (first shard only; None elsewhere)."""
        return None if self.embeddings is None else self.arch.word_embedding(self.embeddings)

    @property
    def layer_indices(self) -> list[int]:
        return list(range(self.start, self.end))

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    # ---- masks and positions ------------------------------------------------------------
    def extend_attention_mask(self, attention_mask: torch.Tensor) -> torch.Tensor:
        """The 2-D mask for hidden states that carry the soft prompt (what later shards receive)."""
        n = self.num_virtual_tokens
        if n == 0:
            return attention_mask
        ones = attention_mask.new_ones((attention_mask.shape[0], n))
        return torch.cat([ones, attention_mask], dim=1)

    def _mask_2d(self, attention_mask, batch: int, length: int, device) -> torch.Tensor:
        if attention_mask is None:
            return torch.ones((batch, length), dtype=torch.long, device=device)
        if attention_mask.dim() != 2 or attention_mask.shape[0] != batch:
            raise ModelError(
                f"attention_mask must have shape ({batch}, {length}), got {tuple(attention_mask.shape)}"
            )
        if attention_mask.shape[1] == length - self.num_virtual_tokens and self.num_virtual_tokens:
            attention_mask = self.extend_attention_mask(attention_mask)
        if attention_mask.shape[1] != length:
            raise ModelError(
                f"attention_mask must have shape ({batch}, {length}), got {tuple(attention_mask.shape)}"
            )
        return attention_mask.to(device)

    def _mask_4d(self, mask2d, n_prefix: int, window: int | None, dtype) -> torch.Tensor | None:
        """(b, 1, q, prefix + q) mask (boolean for SDPA, additive otherwise), or None where SDPA's own
        causal flag is exact."""
        b, length = mask2d.shape
        causal = self.arch.causal
        no_window = window is None or window >= length
        if (n_prefix == 0 and no_window and self.config._attn_implementation == "sdpa"
                and bool(mask2d.all())):
            return None
        device = mask2d.device
        q = torch.arange(length, device=device)[:, None]
        k = torch.arange(length, device=device)[None, :]
        allowed = mask2d.bool()[:, None, None, :].expand(b, 1, length, length)
        if causal:
            allowed = allowed & (k <= q)
        if not no_window:
            allowed = allowed & (q - k < window)
        if n_prefix:
            allowed = torch.cat(
                [torch.ones((b, 1, length, n_prefix), dtype=torch.bool, device=device), allowed], dim=-1
            )
        if self.config._attn_implementation == "sdpa":
            # boolean, as transformers gives SDPA: rows with nothing to attend to come out as zeros
            return allowed
        out = torch.zeros(allowed.shape, dtype=dtype, device=device)
        return out.masked_fill(~allowed, torch.finfo(dtype).min)

    # ---- forward ------------------------------------------------------------------------
    def _embed(self, input_ids, token_type_ids, position_ids):
        if input_ids.dim() != 2:
            raise ModelError(f"input_ids must be 2-D (batch, length), got shape {tuple(input_ids.shape)}")
        b = input_ids.shape[0]
        prompt = self.prompt_encoder(b) if self.prompt_encoder is not None else None
        n = 0 if prompt is None else prompt.shape[1]
        length = input_ids.shape[1] + n
        limit = self.arch.position_limit(self.config)
        if limit is not None and length > limit:
            raise ModelError(f"sequence of {length} positions exceeds the model's {limit}")
        return self.arch.embed(self.embeddings, input_ids, prompt, token_type_ids, position_ids)

    def forward(self, input_ids=None, hidden_states=None, attention_mask=None, token_type_ids=None,
                position_ids=None):
        """First shard: input_ids -> hidden states; later shards: hidden states -> hidden states;
        the last shard returns logits ((b, num_labels) or (b, length, vocab) for causal-lm)."""
        if self.is_first:
            if input_ids is None:
                raise ModelError("the first shard needs input_ids")
            h = self._embed(input_ids, token_type_ids, position_ids)
        else:
            if hidden_states is None:
                raise ModelError(f"shard [{self.start}, {self.end}) needs hidden_states from the previous shard")
            if hidden_states.dim() != 3 or hidden_states.shape[-1] != self.config.hidden_size:
                raise ModelError(
                    f"hidden_states must have shape (batch, length, {self.config.hidden_size}), "
                    f"got {tuple(hidden_states.shape)}"
                )
            h = hidden_states
        b, length = h.shape[:2]
        mask2d = self._mask_2d(attention_mask, b, length, h.device)
        if position_ids is None:
            position_ids = torch.arange(length, device=h.device)[None]

        cache, n_prefix = None, 0
        if self.prefix_encoder is not None:
            cache = PrefixCache(self.prefix_encoder(b))
            n_prefix = self.prefix_encoder.num_tokens

        kwargs = self.arch.layer_kwargs(self.rotary_emb, h, position_ids)
        if cache is not None:
            kwargs[self._cache_kwarg()] = cache
        masks: dict = {}
        for layer in self.layers.values():
            window = self.arch.attention_window(self.config, layer)
            if window not in masks:
                masks[window] = self._mask_4d(mask2d, n_prefix, window, h.dtype)
            out = layer(h, attention_mask=masks[window], **kwargs)
            h = out[0] if isinstance(out, tuple) else out

        if not self.is_last:
            return h
        return self._head(h, mask2d)

    def _cache_kwarg(self) -> str:
        """transformers renamed the layers' ``past_key_values`` argument to ``cache`` during 5.x."""
        import inspect

        layer = next(iter(self.layers.values()))
        params = inspect.signature(type(layer).forward).parameters
        return "cache" if "cache" in params else "past_key_values"

    def _head(self, h, mask2d):
        if self.norm is not None:
            h = self.norm(h)
        if self.task == "causal-lm":
            logits = self.head[self.arch.head_layer(self.task)](h)
            # logits line up with the caller's input_ids: the soft prompt's positions are dropped
            return logits[:, self.num_virtual_tokens:] if self.num_virtual_tokens else logits
        return self.arch.classify(self.head, h, mask2d)

    def extra_repr(self) -> str:
        return f"family={self.family}, task={self.task}, layers=[{self.start}, {self.end}) of {self.n_layers}"
