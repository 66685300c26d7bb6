"""Hypothesis strategies for random model replies: protocol tags, numbers and noise glued together."""
from __future__ import annotations

from hypothesis import strategies as st

TOKENS = [
    "<think>", "</think>", "<search>", "</search>", "<bbox>", "</bbox>", "<answer>", "</answer>",
    "[", "]", ",", " ", "\n", "-", ".", "0", "1", "5", "28", "100", "400", "2000", "NaN", "1e400",
    "revenue", "价格", "x", "{", "}", '"',
]
# Well-formed pieces so that valid replies (and so searches, crops and answers) are common.
PIECES = [
    "<think>look</think>", "<search>revenue</search>", "<search>cloud 价格</search>", "<answer>42</answer>",
    "<bbox>[0, 0, 100, 100]</bbox>", "<bbox>[50, 60, 400, 300]</bbox>", "<bbox>[10, 10, 20, 20]</bbox>",
]

replies = st.lists(st.sampled_from(TOKENS + PIECES), max_size=24).map("".join) | st.text(max_size=60)
