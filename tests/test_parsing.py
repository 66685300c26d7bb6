"""Table-driven tests of the reply parser: every protocol error, and the reference's first-match rule."""
from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from reply_strategies import replies

from agent.parsing import ACTION_RE, BBOX_TOLERANCE, check_action, check_bbox, parse_bbox, parse_reply
from agent.prompts import FEEDBACK

T = "<think>ok</think>"

# (reply, action, argument, error_code)
CASES = [
    # well-formed
    (T + "<search>revenue 2023</search>", "search", "revenue 2023", None),
    (T + "<search>  padded query \n</search>", "search", "padded query", None),
    (T + "<answer> Beijing </answer>", "answer", "Beijing", None),
    (T + "<bbox>[10, 20, 30, 40]</bbox>", "bbox", "[10, 20, 30, 40]", None),
    (T + "<bbox>[10.5, 20, 30.25, 40]</bbox>", "bbox", "[10.5, 20, 30.25, 40]", None),
    ("<think>multi\nline\nthought</think>\n<answer>multi\nline</answer>", "answer", "multi\nline", None),
    ("prefix text " + T + " between <search>q</search> trailing", "search", "q", None),
    (T + "<answer>价格是 12%</answer>", "answer", "价格是 12%", None),
    # action before think is accepted (the reference searches the whole reply)
    ("<search>q</search>" + T, "search", "q", None),
    # empty / missing pieces
    ("", None, "", "empty_reply"),
    ("   \n\t ", None, "", "empty_reply"),
    ("<search>q</search>", "search", "q", "missing_think"),
    ("just some text", None, "", "missing_think"),
    ("<think></think><answer>x</answer>", "answer", "x", None),  # an empty thought is still a thought
    (T, None, "", "no_action"),
    (T + " I will search now.", None, "", "no_action"),
    (T + "<Search>q</Search>", None, "", "no_action"),  # tags are case-sensitive, as in the reference
    (T + "<query>q</query>", None, "", "no_action"),
    # unclosed and mismatched tags
    (T + "<answer> 42", None, "", "unclosed_tag"),
    (T + "<search> q", None, "", "unclosed_tag"),
    (T + "<bbox>[1, 2, 3, 4]", None, "", "unclosed_tag"),
    ("<think> never closed <answer>x</answer>", "answer", "x", "unclosed_tag"),
    (T + "<search>q</answer>", None, "", "unclosed_tag"),
    # two actions: the reference's first match is still reported, but the turn is invalid
    (T + "<search>a</search><answer>b</answer>", "search", "a", "multiple_actions"),
    (T + "<answer>b</answer><search>a</search>", "answer", "b", "multiple_actions"),
    (T + "<search>a</search><search>b</search>", "search", "a", "multiple_actions"),
    ("<think>I could <search>x</search></think><answer>y</answer>", "search", "x", "multiple_actions"),
    # empty arguments
    (T + "<search></search>", "search", "", "empty_search"),
    (T + "<search>  \n </search>", "search", "", "empty_search"),
    (T + "<answer> </answer>", "answer", "", "empty_answer"),
    # bbox format
    (T + "<bbox>1, 2, 3, 4</bbox>", "bbox", "1, 2, 3, 4", "bbox_format"),
    (T + "<bbox>[1, 2, 3]</bbox>", "bbox", "[1, 2, 3]", "bbox_format"),
    (T + "<bbox>[1, 2, 3, 4, 5]</bbox>", "bbox", "[1, 2, 3, 4, 5]", "bbox_format"),
    (T + "<bbox>[]</bbox>", "bbox", "[]", "bbox_format"),
    (T + "<bbox>[[1, 2, 3, 4]]</bbox>", "bbox", "[[1, 2, 3, 4]]", "bbox_format"),
    (T + '<bbox>{"bbox_2d": [1, 2, 3, 4]}</bbox>', "bbox", '{"bbox_2d": [1, 2, 3, 4]}', "bbox_format"),
    (T + '<bbox>["1", 2, 3, 4]</bbox>', "bbox", '["1", 2, 3, 4]', "bbox_format"),
    (T + "<bbox>[true, 2, 3, 4]</bbox>", "bbox", "[true, 2, 3, 4]", "bbox_format"),
    (T + "<bbox>[null, 2, 3, 4]</bbox>", "bbox", "[null, 2, 3, 4]", "bbox_format"),
    (T + "<bbox>[-1, 2, 3, 4]</bbox>", "bbox", "[-1, 2, 3, 4]", "bbox_format"),
    (T + "<bbox>[30, 20, 10, 40]</bbox>", "bbox", "[30, 20, 10, 40]", "bbox_format"),
    (T + "<bbox>[10, 40, 30, 20]</bbox>", "bbox", "[10, 40, 30, 20]", "bbox_format"),
    (T + "<bbox>[10, 20, 10, 40]</bbox>", "bbox", "[10, 20, 10, 40]", "bbox_format"),  # zero width
    (T + "<bbox>[NaN, 2, 3, 4]</bbox>", "bbox", "[NaN, 2, 3, 4]", "bbox_format"),
    (T + "<bbox>[1, 2, Infinity, 4]</bbox>", "bbox", "[1, 2, Infinity, 4]", "bbox_format"),
    (T + "<bbox>[1, 2, 1e400, 4]</bbox>", "bbox", "[1, 2, 1e400, 4]", "bbox_format"),
    (T + "<bbox>[1, 2, " + "9" * 400 + ", 4]</bbox>", "bbox", "[1, 2, " + "9" * 400 + ", 4]", "bbox_format"),
    (T + "<bbox>" + "[" * 5000 + "</bbox>", "bbox", "[" * 5000, "bbox_format"),
]


@pytest.mark.parametrize("reply, action, argument, code", CASES)
def test_parse_reply_table(reply, action, argument, code):
    parsed = parse_reply(reply)
    assert parsed.action == action
    assert parsed.argument == argument
    assert parsed.error_code == code, parsed.error
    assert parsed.valid == (code is None)
    if code is None:
        assert parsed.error is None and parsed.feedback is None
    else:
        assert parsed.error and parsed.feedback
        assert "{" not in parsed.feedback  # every placeholder filled
        assert len(parsed.feedback) < 220  # one short message


def test_action_matches_the_reference_regex_exactly():
    text = "noise <think> t </think> <bbox> [1,2,3,4] </bbox> <answer>x</answer>"
    m = re.search(r"<(search|answer|bbox)>(.*?)</\1>", text, re.DOTALL)
    parsed = parse_reply(text)
    assert (parsed.action, parsed.argument, parsed.raw_action) == (m.group(1), m.group(2).strip(), m.group(0))
    assert parsed.thought == "t"
    assert parsed.extra_actions == ("answer",)


def test_thought_and_bbox_values():
    parsed = parse_reply("<think>  look at the chart  </think><bbox>[10, 20.5, 30, 40]</bbox>")
    assert parsed.thought == "look at the chart"
    assert parsed.bbox == (10.0, 20.5, 30.0, 40.0)
    assert parse_reply(T + "<search>q</search>").bbox is None


def test_every_feedback_code_is_reachable_and_short():
    codes = {c for *_, c in CASES if c} | {"bbox_no_image", "bbox_outside", "bad_query"}  # bad_query: tests/test_agent_loop.py
    assert codes == set(FEEDBACK)


@pytest.mark.parametrize("text, expected", [
    ("[0, 0, 1, 1]", (0.0, 0.0, 1.0, 1.0)),
    ("[1,2,3,4]", (1.0, 2.0, 3.0, 4.0)),
    (" [ 1 , 2 , 3 , 4 ] ", (1.0, 2.0, 3.0, 4.0)),
    ("[1, 2, 3, 4.0]", (1.0, 2.0, 3.0, 4.0)),
])
def test_parse_bbox_ok(text, expected):
    assert parse_bbox(text) == (expected, None)


# check_bbox against an 800x600 image (tolerance: 28 model pixels past the edge)
@pytest.mark.parametrize("box, outside", [
    ((0, 0, 800, 600), False),
    ((100, 100, 200, 200), False),
    ((700, 500, 800 + BBOX_TOLERANCE, 600 + BBOX_TOLERANCE), False),  # slight overshoot is clamped later
    ((700, 500, 800 + BBOX_TOLERANCE + 1, 600), True),
    ((700, 500, 800, 600 + BBOX_TOLERANCE + 0.5), True),
    ((800, 0, 900, 10), True),  # starts at the right edge
    ((0, 600, 10, 610), True),  # starts at the bottom edge
    ((0, 0, 1000, 1000), True),  # 0-1000 normalised coordinates on a smaller image
])
def test_check_bbox(box, outside):
    reason = check_bbox(box, (800, 600))
    assert (reason is not None) == outside
    if outside:
        assert "800x600" in reason


def test_check_action_needs_an_image_for_bbox():
    parsed = parse_reply(T + "<bbox>[1, 2, 3, 4]</bbox>")
    assert check_action(parsed, None).error_code == "bbox_no_image"
    assert check_action(parsed, (100, 100)).valid
    outside = check_action(parse_reply(T + "<bbox>[1, 2, 300, 4]</bbox>"), (100, 100))
    assert outside.error_code == "bbox_outside"
    assert "100x100" in outside.feedback
    # other actions and already-invalid replies pass through unchanged
    search = parse_reply(T + "<search>q</search>")
    assert check_action(search, None) is search
    bad = parse_reply(T + "<bbox>[1, 2]</bbox>")
    assert check_action(bad, None) is bad


@settings(max_examples=1000, deadline=None)
@given(replies)
def test_parse_reply_never_raises_and_agrees_with_reference(text):
    parsed = parse_reply(text)
    m = ACTION_RE.search(text)
    assert parsed.action == (m.group(1) if m else None)
    if parsed.valid:
        assert parsed.thought is not None and parsed.action is not None and not parsed.extra_actions
        if parsed.action == "bbox":
            x1, y1, x2, y2 = parsed.bbox
            assert 0 <= x1 < x2 and 0 <= y1 < y2
    else:
        assert parsed.feedback


def test_parse_reply_tolerates_non_strings():
    assert parse_reply(None).error_code == "empty_reply"
