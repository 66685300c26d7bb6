"""Table-driven tests of the reply parser: every protocol error, and the reference's first-match rule."""
from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from support.reply_strategies import replies

from agent.parsing import (
    ACTION_RE, BBOX_TOLERANCE, check_action, check_bbox, check_training, parse_bbox, parse_reply, parse_training, read_reply,
    tags_only,
)
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
    codes = {c for *_, c in CASES if c} | {"bbox_no_image", "bbox_outside", "bad_query"}  # bad_query: tests/unit/test_agent_loop.py
    codes |= {"bbox_crop_failed"}  # the training crop's failure: tests/unit/test_protocol.py, tests/integration/test_agent_profiles.py
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


# --- the training loop's rules (the "training" and "explain" profiles) ----------------------------------
# (reply, action, argument, error_code): written from the protocol note, not from parse_reply's table
TRAINING_CASES = [
    (T + "<search>revenue</search>", "search", "revenue", None),
    ("<search>no think at all</search>", "search", "no think at all", None),  # a missing <think> is not an error
    ("just text <answer>42</answer> and more", "answer", "42", None),
    (T + "<search>a</search><answer>b</answer>", "search", "a", None),  # the first action wins, silently
    (T + "<answer>b</answer><search>a</search>", "answer", "b", None),
    ("<think>I could <search>x</search></think><answer>y</answer>", "search", "x", None),
    (T + "<search></search>", "search", "", None),  # an empty query is searched
    (T + "<answer> </answer>", "answer", "", None),  # an empty answer is an answer
    ("<think> never closed <answer>x</answer>", "answer", "x", None),
    # no action at all
    ("", None, "", "empty_reply"),
    ("  \n ", None, "", "empty_reply"),
    ("just some text", None, "", "no_action"),
    (T, None, "", "no_action"),
    (T + "<Search>q</Search>", None, "", "no_action"),
    (T + "<answer> 42", None, "", "unclosed_tag"),
    (T + "<search>q</answer>", None, "", "unclosed_tag"),
    # bbox: json.loads, len == 4, every item >= 0 (Python's comparison)
    (T + "<bbox>[10, 20, 30, 40]</bbox>", "bbox", "[10, 20, 30, 40]", None),
    ("<bbox>[10.5, 20, 30.25, 40]</bbox>", "bbox", "[10.5, 20, 30.25, 40]", None),
    (T + "<bbox>[30, 20, 10, 40]</bbox>", "bbox", "[30, 20, 10, 40]", None),  # inverted: the crop decides
    (T + "<bbox>[10, 20, 10, 40]</bbox>", "bbox", "[10, 20, 10, 40]", None),  # zero width: padding may save it
    (T + "<bbox>[true, 2, 3, 4]</bbox>", "bbox", "[true, 2, 3, 4]", None),  # True >= 0 in Python
    (T + "<bbox>[0, 0, 1000, 1000]</bbox>", "bbox", "[0, 0, 1000, 1000]", None),  # outside: clamped by the crop
    (T + "<bbox>[1, 2, Infinity, 4]</bbox>", "bbox", "[1, 2, Infinity, 4]", None),  # passes; the crop fails
    (T + "<bbox>1, 2, 3, 4</bbox>", "bbox", "1, 2, 3, 4", "bbox_format"),
    (T + "<bbox>[1, 2, 3]</bbox>", "bbox", "[1, 2, 3]", "bbox_format"),
    (T + "<bbox>[1, 2, 3, 4, 5]</bbox>", "bbox", "[1, 2, 3, 4, 5]", "bbox_format"),
    (T + "<bbox>[-1, 2, 3, 4]</bbox>", "bbox", "[-1, 2, 3, 4]", "bbox_format"),
    (T + "<bbox>[NaN, 2, 3, 4]</bbox>", "bbox", "[NaN, 2, 3, 4]", "bbox_format"),  # NaN >= 0 is False
    (T + '<bbox>["1", 2, 3, 4]</bbox>', "bbox", '["1", 2, 3, 4]', "bbox_format"),
    (T + "<bbox>[null, 2, 3, 4]</bbox>", "bbox", "[null, 2, 3, 4]", "bbox_format"),
    (T + "<bbox>[[1, 2], [3, 4], [5, 6], [7, 8]]</bbox>", "bbox", "[[1, 2], [3, 4], [5, 6], [7, 8]]", "bbox_format"),
    (T + '<bbox>{"a": 1, "b": 2, "c": 3, "d": 4}</bbox>', "bbox", '{"a": 1, "b": 2, "c": 3, "d": 4}', "bbox_format"),
    (T + '<bbox>"abcd"</bbox>', "bbox", '"abcd"', "bbox_format"),
    (T + "<bbox>1234</bbox>", "bbox", "1234", "bbox_format"),
    (T + "<bbox>[1, 2, " + "9" * 400 + ", 4]</bbox>", "bbox", "[1, 2, " + "9" * 400 + ", 4]", "bbox_format"),
    (T + "<bbox>" + "[" * 5000 + "</bbox>", "bbox", "[" * 5000, "bbox_format"),
]


@pytest.mark.parametrize("reply, action, argument, code", TRAINING_CASES)
def test_parse_training_table(reply, action, argument, code):
    parsed = parse_training(reply)
    assert (parsed.action, parsed.argument, parsed.error_code) == (action, argument, code), parsed.error
    assert parsed.valid == (code is None) and (parsed.error is None) == (code is None)


def test_parse_training_values():
    assert parse_training("<bbox>[true, 0, 30, 40.5]</bbox>").bbox == (1.0, 0.0, 30.0, 40.5)
    assert parse_training("<think> t </think><search>q</search>").thought == "t"
    assert parse_training("<search>q</search>").thought is None


def test_check_training_needs_a_retrieved_page_for_bbox():
    parsed = parse_training("<bbox>[1, 2, 3, 4]</bbox>")
    assert check_training(parsed, has_page=False).error_code == "bbox_no_image"
    assert check_training(parsed, has_page=True) is parsed
    search = parse_training("<search>q</search>")
    assert check_training(search, has_page=False) is search


def test_read_reply_dispatches_by_rules():
    reply = "<search>no think</search>"
    assert read_reply(reply, "strict", None).error_code == "missing_think"
    assert read_reply(reply, "training", None).valid
    assert read_reply(T + "<bbox>[1, 2, 3, 4]</bbox>", "training", None).error_code == "bbox_no_image"
    assert read_reply(T + "<bbox>[1, 2, 300, 4]</bbox>", "strict", (100, 100)).error_code == "bbox_outside"
    assert read_reply(T + "<bbox>[1, 2, 300, 4]</bbox>", "training", (100, 100)).valid  # clamped by the crop
    with pytest.raises(ValueError, match="unknown reply rules"):
        read_reply(reply, "lenient", None)


@pytest.mark.parametrize("reply, kept", [
    ("<think>a</think><search>q</search>", "<think>a</think>\n<search>q</search>"),
    ("Sure! <think> a </think>\n\nnow <bbox>[1, 2, 3, 4]</bbox> done.", "<think> a </think>\n<bbox>[1, 2, 3, 4]</bbox>"),
    ("no tags at all", ""),
    ("<think>x</think><answer>first</answer><answer>second</answer>", "<think>x</think>\n<answer>first</answer>\n<answer>second</answer>"),
    ("<think>I could <search>x</search></think>", "<think>I could <search>x</search></think>"),  # a match holds what is inside
    ("<think>unclosed <search>q</search>", "<search>q</search>"),
    ("<caption>c</caption><answer>a</answer>", "<answer>a</answer>"),  # only the four protocol tags
    ("<think>多行\n思考</think>\n<answer>价格</answer>", "<think>多行\n思考</think>\n<answer>价格</answer>"),
])
def test_tags_only_keeps_the_tag_pairs_joined_by_newlines(reply, kept):
    assert tags_only(reply) == kept
    assert tags_only(reply) == "\n".join(m.group(0) for m in re.finditer(r"<(answer|search|think|bbox)>(.*?)</\1>", reply, re.DOTALL))


@settings(max_examples=500, deadline=None)
@given(replies)
def test_parse_training_never_raises_and_takes_the_first_match(text):
    parsed = parse_training(text)
    m = ACTION_RE.search(text)
    assert parsed.action == (m.group(1) if m else None)
    assert parsed.valid == (m is not None and (m.group(1) != "bbox" or parsed.bbox is not None))
