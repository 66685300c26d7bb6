"""Hypothesis strategies for random model replies: well-formed turns, near misses and noise."""
from __future__ import annotations

from hypothesis import strategies as st

TOKENS = [
    "<think>", "</think>", "<search>", "</search>", "<bbox>", "</bbox>", "<answer>", "</answer>",
    "[", "]", ",", " ", "\n", "-", ".", "0", "1", "5", "28", "100", "400", "2000", "NaN", "1e400",
    "revenue", "价格", "x", "{", "}", '"',
]
PIECES = [
    "<think>look</think>", "<search>revenue</search>", "<search>cloud 价格</search>", "<answer>42</answer>",
    "<bbox>[0, 0, 100, 100]</bbox>", "<bbox>[50, 60, 400, 300]</bbox>", "<bbox>[10, 10, 20, 20]</bbox>",
]

soup = st.lists(st.sampled_from(TOKENS + PIECES), max_size=24).map("".join)

coordinate = st.one_of(st.integers(-5, 700), st.floats(allow_nan=True, allow_infinity=True, width=32))
bbox_text = st.one_of(
    st.tuples(st.integers(0, 300), st.integers(0, 200), st.integers(1, 400), st.integers(1, 300)).map(
        lambda v: f"[{v[0]}, {v[1]}, {v[0] + v[2]}, {v[1] + v[3]}]"),  # mostly well-formed, some outside
    st.lists(coordinate, min_size=4, max_size=4).map(lambda v: "[" + ", ".join(map(str, v)) + "]"),
    st.lists(st.integers(0, 700), min_size=3, max_size=5).map(str),
    st.text(max_size=12),
)
action = st.one_of(
    st.text(min_size=0, max_size=20).map(lambda q: f"<search>{q}</search>"),
    st.text(alphabet="abc 价格0123456789", min_size=1, max_size=20).map(lambda q: f"<search>{q}</search>"),
    st.sampled_from(["revenue 2023", "价格", "chart"]).map(lambda q: f"<search>{q}</search>"),
    bbox_text.map(lambda b: f"<bbox>{b}</bbox>"),
    st.text(max_size=12).map(lambda a: f"<answer>{a}</answer>"),
)
# a turn shaped like the protocol, sometimes missing its thought or carrying trailing noise
structured = st.tuples(
    st.sampled_from(["<think>reason</think>"] * 3 + ["<think>多行\n思考</think>\n", ""]),
    action,
    st.sampled_from([""] * 6 + ["\n", " extra", "<answer>also</answer>", "<search>"]),
).map("".join)

# about 70% protocol-shaped turns, 20% tag soup, 10% arbitrary text
replies = st.integers(0, 9).flatmap(lambda i: structured if i < 7 else soup if i < 9 else st.text(max_size=60))
