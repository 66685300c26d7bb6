"""Attention probabilities of chosen query rows, captured in one forward pass with bounded memory.

`output_attentions=True` keeps a (heads, seq, seq) tensor for EVERY layer until the pass ends: with
ten page images (~5,000 tokens) and 28 layers of 28 heads that is ~40 GB in bfloat16. Instead, a
forward pre-hook on each chosen decoder layer's self-attention recomputes eager attention for the
few query rows we need, from that module's own q/k projections and rotary embedding:

    probs = softmax(q_rows @ k^T * scaling  + causal mask)     (float32, as eager's softmax)

reduces it at once (heads -> mean or max, or one head, or every head kept apart; rows -> mean;
only image-token columns kept) and adds it into a (groups, [heads,] image tokens) accumulator.
Peak extra memory is one chunk of (heads x rows x seq) floats, capped by `max_elements`, whatever
the number of layers; the forward itself can run with any attention implementation (sdpa never
materialises seq x seq at all).
The pass stops right after the last chosen layer (later layers cannot change earlier attention).
`layer_progress` reports each decoder layer as the pass enters it (and lets the callback cancel the
pass by raising). tests/integration/test_attention_hooks.py checks the rows against eager `output_attentions`.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import numpy as np
import torch
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import repeat_kv, rotate_half

from agent.attention_maps import REDUCTIONS


class StopForward(Exception):
    """Raised by a hook after the last chosen layer: nothing further is needed from the pass."""


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding as Qwen2.5-VL applies it; x (b, heads, n, d), cos/sin (b, n, d)."""
    return x * cos.unsqueeze(1) + rotate_half(x) * sin.unsqueeze(1)


def row_attention_probs(query: torch.Tensor, key: torch.Tensor, positions: torch.Tensor, scaling: float) -> torch.Tensor:
    """Causal softmax attention of queries at `positions` over all keys.

    query (heads, r, d) and key (heads, seq, d), both after rotary embedding and with key/value
    heads already repeated; returns (heads, r, seq) float32 with zeros after each row's position.
    """
    scores = torch.matmul(query.float(), key.float().transpose(-1, -2)) * scaling
    future = torch.arange(key.shape[-2], device=key.device)[None, :] > positions[:, None]
    scores.masked_fill_(future[None], float("-inf"))
    return torch.softmax(scores, dim=-1)


class RowAttentionRecorder:
    """Accumulates, per group of query rows, attention to `columns` over the chosen layers.

    groups: one array of query positions per group (a turn's producing rows); columns: the key
    positions kept (all image tokens). `heads`: None combines the heads by `reduce` (per row, as
    eager's maps are usually averaged), an int keeps that one head, "each" keeps every head apart.
    `reduce` also combines the layers; rows are always averaged. After the pass, `result()` is a
    (groups, columns) float32 array, or (groups, heads, columns) with heads="each".
    """

    def __init__(self, layers: Sequence[int], groups: Sequence[np.ndarray], columns: np.ndarray, reduce: str = "mean",
                 max_elements: int = 1 << 24, heads: int | str | None = None):
        if reduce not in REDUCTIONS:
            raise ValueError(f"reduce must be one of {REDUCTIONS}, got {reduce!r}")
        if not layers:
            raise ValueError("at least one layer must be chosen")
        if not (heads is None or heads == "each" or (isinstance(heads, int) and not isinstance(heads, bool) and heads >= 0)):
            raise ValueError(f"heads must be None, a head index or 'each', got {heads!r}")
        self.layers = sorted(set(int(i) for i in layers))
        self.groups = [np.asarray(g, dtype=np.int64) for g in groups]
        if any(g.size == 0 for g in self.groups):
            raise ValueError("every group needs at least one query row")
        self.columns = np.asarray(columns, dtype=np.int64)
        self.reduce = reduce
        self.heads = heads
        self.max_elements = max_elements
        self._acc: torch.Tensor | None = None  # (groups, kept heads, columns), made at the first layer
        self.layers_seen: list[int] = []

    def result(self) -> np.ndarray:
        if self.layers_seen != self.layers:
            raise RuntimeError(f"the forward pass reached layers {self.layers_seen}, expected {self.layers}")
        acc = self._acc / len(self.layers) if self.reduce == "mean" else self._acc
        out = acc.numpy().copy()
        return out if self.heads == "each" else out[:, 0]

    # --- hooks -----------------------------------------------------------------------------------

    def _per_row(self, probs: torch.Tensor) -> torch.Tensor:
        """(heads, r, C) probabilities -> (kept heads, r, C)."""
        if self.heads is None:
            return (probs.mean(0) if self.reduce == "mean" else probs.amax(0))[None]
        if self.heads == "each":
            return probs
        return probs[self.heads][None]

    def _record(self, layer: int, attn, hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> None:
        if hidden.shape[0] != 1:
            raise ValueError("attention capture works on one sequence at a time")
        if getattr(attn, "sliding_window", None):
            raise ValueError(f"layer {layer} uses sliding-window attention, which this capture does not model")
        seq = hidden.shape[1]
        head_dim = attn.head_dim
        key = attn.k_proj(hidden).view(1, seq, -1, head_dim).transpose(1, 2)
        key = repeat_kv(_rope(key, cos, sin), attn.num_key_value_groups)[0]  # (heads, seq, d)
        heads = key.shape[0]
        if isinstance(self.heads, int) and self.heads >= heads:
            raise ValueError(f"head {self.heads} is outside layer {layer}'s {heads} attention heads")
        if self._acc is None:
            kept = heads if self.heads == "each" else 1
            fill = 0.0 if self.reduce == "mean" else float("-inf")
            self._acc = torch.full((len(self.groups), kept, self.columns.size), fill, dtype=torch.float32)
        columns = torch.as_tensor(self.columns, device=hidden.device)
        chunk = max(1, self.max_elements // (heads * seq))
        for g, rows in enumerate(self.groups):
            row_sum = torch.zeros(self._acc.shape[1:], dtype=torch.float32, device=hidden.device)
            for start in range(0, rows.size, chunk):
                positions = torch.as_tensor(rows[start:start + chunk], device=hidden.device)
                query = attn.q_proj(hidden[:, positions]).view(1, positions.numel(), -1, head_dim).transpose(1, 2)
                query = _rope(query, cos[:, positions], sin[:, positions])[0]  # (heads, r, d)
                probs = row_attention_probs(query, key, positions, attn.scaling)[:, :, columns]  # (heads, r, C)
                row_sum += self._per_row(probs).sum(1)
            layer_map = (row_sum / rows.size).cpu()
            if self.reduce == "mean":
                self._acc[g] += layer_map
            else:
                self._acc[g] = torch.maximum(self._acc[g], layer_map)
        self.layers_seen.append(layer)

    @contextlib.contextmanager
    def attached(self, decoder_layers: Sequence[torch.nn.Module]):
        """Hook the chosen layers of `decoder_layers` (the language model's layer list) for one pass."""
        if self.layers[-1] >= len(decoder_layers) or self.layers[0] < 0:
            raise ValueError(f"layers {self.layers[0]}..{self.layers[-1]} are outside the model's {len(decoder_layers)} layers")
        handles = []

        def pre_hook(layer: int):
            def hook(module, args, kwargs):
                hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
                cos, sin = kwargs["position_embeddings"]
                with torch.no_grad():
                    self._record(layer, module, hidden, cos, sin)
            return hook

        def stop(module, args, output):
            raise StopForward

        try:
            for layer in self.layers:
                handles.append(decoder_layers[layer].self_attn.register_forward_pre_hook(pre_hook(layer), with_kwargs=True))
            handles.append(decoder_layers[self.layers[-1]].register_forward_hook(stop))
            yield self
        finally:
            for handle in handles:
                handle.remove()


@contextlib.contextmanager
def layer_progress(decoder_layers: Sequence[torch.nn.Module], last: int, callback: Callable[[int, int], None]):
    """Call `callback(layer, last + 1)` as the pass enters each decoder layer up to `last`.

    An exception raised by the callback ends the pass (that is how a job is cancelled).
    """
    handles = [decoder_layers[i].register_forward_pre_hook(lambda module, args, i=i: callback(i, last + 1)) for i in range(last + 1)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def run_until_stop(forward, *args, **kwargs) -> None:
    """Call `forward`, treating the recorder's StopForward as the normal end of the pass."""
    try:
        forward(*args, **kwargs)
    except StopForward:
        pass
