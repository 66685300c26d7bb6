"""What map to compute: the typed "map request" the attention panel builds and every path honours.

    MapRequest()                                     # each turn's action argument, all layers, mean
    MapRequest(select="answer", layers=(20, 27))     # the answer text, layers 20..27, mean of heads
    MapRequest(select="token", turn=3, token=12)     # the 13th generated token of turn 3
    MapRequest(select="bbox", layers=(14, 14), head=5, reduce="max")      # one head of one layer
    MapRequest(select="reply", layers=(14, 14), per_head=True)            # a per-head grid
    MapRequest(select="answer", sink="drop")         # attention-sink correction (off by default)

Fields (all validated here, except the layer and head ranges, which need the model: see `check`):
- select: a token group of each reply ("action", "bbox", "answer", "search", "reply"; see
  agent/attention_maps.py `selection_span`) or "token" for one generated token.
- turn: only this turn (0-based); None: every turn that has an image in context. Required with
  select="token".
- token: with select="token", the index of the token among the tokens of the turn's reply, in the
  order `MapsResult.reply_tokens` lists them (the UI shows those pieces to click).
- layers: (first, last) decoder layers, inclusive; None: all. One layer is (n, n).
- head: one attention head (0-based, over query heads); None: heads combined by `reduce`.
- per_head: keep every head apart: maps are (heads, rows, cols) grids instead of (rows, cols).
- reduce: "mean" or "max": over heads (when they are combined) and over the chosen layers. The
  query rows of a token group are always averaged.
- sink: "none", "drop" or "baseline" (agent/attention_maps.py `correct_sinks`).

`key()` names the choice in files (agent/attention.py stores every choice apart, so switching back
is a file read): `<tokens>_<layers>_<heads>[_sink-<mode>]` with
    tokens  action | bbox | answer | search | reply | t<TT>-<group> (one turn) | t<TT>k<K> (one token)
    layers  Lall | L<first>-<last>
    heads   mean | max (heads and layers combined) | h<H>-<reduce> (one head) | heads-<reduce> (per head)
e.g. `answer_Lall_mean`, `t03k12_L14-14_h5-max`, `reply_L0-3_heads-mean_sink-drop`.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from agent.attention_maps import REDUCTIONS, SELECTIONS, SINK_MODES

TOKEN = "token"
KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class MapRequest:
    select: str = "action"
    turn: int | None = None
    token: int | None = None
    layers: tuple[int, int] | None = None
    head: int | None = None
    per_head: bool = False
    reduce: str = "mean"
    sink: str = "none"

    def __post_init__(self):
        if self.select not in SELECTIONS + (TOKEN,):
            raise ValueError(f"select must be one of {SELECTIONS + (TOKEN,)}, got {self.select!r}")
        if self.reduce not in REDUCTIONS:
            raise ValueError(f"reduce must be one of {REDUCTIONS}, got {self.reduce!r}")
        if self.sink not in SINK_MODES:
            raise ValueError(f"sink must be one of {SINK_MODES}, got {self.sink!r}")
        for name in ("turn", "token", "head"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise ValueError(f"{name} must be a non-negative integer or None, got {value!r}")
        if self.select == TOKEN and (self.turn is None or self.token is None):
            raise ValueError("select='token' needs both turn and token (which generated token of which turn)")
        if self.select != TOKEN and self.token is not None:
            raise ValueError(f"token={self.token} only makes sense with select='token'")
        if self.head is not None and self.per_head:
            raise ValueError("choose one head (head=N) or every head apart (per_head=True), not both")
        if self.layers is not None:
            layers = tuple(self.layers)
            if len(layers) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in layers):
                raise ValueError(f"layers must be (first, last) integers or None, got {self.layers!r}")
            if not 0 <= layers[0] <= layers[1]:
                raise ValueError(f"layers {layers} must satisfy 0 <= first <= last")
            object.__setattr__(self, "layers", layers)

    # --- against a model -------------------------------------------------------------------------

    def layer_list(self, num_layers: int) -> list[int]:
        first, last = self.layers if self.layers is not None else (0, num_layers - 1)
        if not 0 <= first <= last < num_layers:
            raise ValueError(f"layers {self.layers} must satisfy 0 <= first <= last < {num_layers} (the model's layer count)")
        return list(range(first, last + 1))

    def check(self, num_layers: int, num_heads: int) -> None:
        """Raise ValueError when the layers or the head are outside this model."""
        self.layer_list(num_layers)
        if self.head is not None and self.head >= num_heads:
            raise ValueError(f"head {self.head} is outside the model's {num_heads} attention heads (0..{num_heads - 1})")

    @property
    def heads(self) -> int | str | None:
        """What agent/attention_hooks.py keeps of the heads: None (combined), an index, or "each"."""
        return "each" if self.per_head else self.head

    # --- names and JSON --------------------------------------------------------------------------

    def key(self) -> str:
        if self.select == TOKEN:
            tokens = f"t{self.turn:02d}k{self.token}"
        else:
            tokens = self.select if self.turn is None else f"t{self.turn:02d}-{self.select}"
        layers = "Lall" if self.layers is None else f"L{self.layers[0]}-{self.layers[1]}"
        if self.per_head:
            heads = f"heads-{self.reduce}"
        elif self.head is not None:
            heads = f"h{self.head}-{self.reduce}"
        else:
            heads = self.reduce
        key = f"{tokens}_{layers}_{heads}" + ("" if self.sink == "none" else f"_sink-{self.sink}")
        assert KEY_RE.match(key), key
        return key

    def describe(self) -> str:
        """Words for a figure's caption, naming the sink correction when it is on."""
        if self.select == TOKEN:
            tokens = f"token {self.token} of turn {self.turn + 1}"
        else:
            tokens = {"action": "the action's argument", "reply": "the whole reply"}.get(self.select, f"the {self.select} text")
            tokens += "" if self.turn is None else f" of turn {self.turn + 1}"
        layers = "all layers" if self.layers is None else (
            f"layer {self.layers[0]}" if self.layers[0] == self.layers[1] else f"layers {self.layers[0]}-{self.layers[1]}")
        if self.per_head:
            heads = "each head" + ("" if self.layers and self.layers[0] == self.layers[1] else f", {self.reduce} over layers")
        elif self.head is not None:
            heads = f"head {self.head}" + ("" if self.layers and self.layers[0] == self.layers[1] else f", {self.reduce} over layers")
        else:
            heads = f"{self.reduce} of heads"
        sink = {"none": "", "drop": "; attention sinks dropped", "baseline": "; sink correction: per-image baseline subtracted"}[self.sink]
        return f"{tokens}; {layers}; {heads}{sink}"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["layers"] = list(self.layers) if self.layers is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "MapRequest":
        if not isinstance(d, dict):
            raise ValueError(f"a map request is a JSON object, got {type(d).__name__}")
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown map request fields: {sorted(unknown)}")
        d = dict(d)
        if d.get("layers") is not None:
            if not isinstance(d["layers"], (list, tuple)):
                raise ValueError(f"layers must be [first, last] or null, got {d['layers']!r}")
            d["layers"] = tuple(d["layers"])
        if not isinstance(d.get("per_head", False), bool):
            raise ValueError(f"per_head must be true or false, got {d['per_head']!r}")
        return cls(**d)
