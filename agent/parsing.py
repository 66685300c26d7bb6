"""Reading a model reply: pure functions that never raise, with every protocol check in one place.

The reference client (../shared/notes/vrag-protocol.md) takes the thought from the first
`<think>(.*?)</think>` and the action from the first `<(search|answer|bbox)>(.*?)</\\1>` (DOTALL,
whole reply, argument stripped). `parse_reply` computes exactly those, so `ParsedReply.action` and
`.argument` are what the reference would have executed, and adds checks the reference lacks (it
crashes on a missing <think> or an unparseable bbox):

| error_code        | when                                                                  |
|-------------------|-----------------------------------------------------------------------|
| empty_reply       | the reply is empty or whitespace                                       |
| unclosed_tag      | a <think>/<search>/<bbox>/<answer> is opened but never closed          |
| missing_think     | no complete <think>...</think>                                         |
| no_action         | no complete action tag                                                 |
| multiple_actions  | more than one complete action tag (see below)                          |
| empty_search      | <search> holds only whitespace                                         |
| empty_answer      | <answer> holds only whitespace                                         |
| bbox_format       | bbox not JSON, not a flat list of exactly 4 numbers, NaN/inf, negative, |
|                   | or inverted / zero-area (x2 <= x1 or y2 <= y1)                         |

Two checks need the loop's state and live in `check_action` (still pure):
| bbox_no_image     | a bbox before any image was shown                                      |
| bbox_outside      | the bbox leaves the last image by more than `BBOX_TOLERANCE` pixels    |

Two actions: the reference silently executes the first match. We still compute that first match
(so a caller can see what the reference would do) but flag the reply as `multiple_actions` and the
loop treats it as an invalid turn: executing one of two contradicting actions hides a model
mistake, and the feedback lets the model recover within its budget.

Outside the image: the reference clamps the padded crop to the image, so a box slightly past an
edge works there. We accept overshoot up to one visual token (28 model pixels) and clamp the same
way; a box further out (typically 0-1000 normalised or raw-page coordinates) is rejected with the
image size in the feedback, because clamping it would crop the wrong place without telling anyone.

The training loop's rules (`parse_training`, used by the "training" and "explain" profiles,
agent/protocol.py) are the reference's own, to the letter: the action is the first match; a missing
<think>, a second action, an empty query or an empty answer are NOT errors; a reply with no complete
action is (empty_reply, unclosed_tag or no_action, all answered by the same fixed message); a bbox must
be JSON of length 4 whose items are all `>= 0` in Python's sense (so `true` counts as 1, and an
inverted box is accepted here: whether it can be cropped is decided by the crop,
agent/protocol.training_crop_box); a bbox before any retrieved page is bbox_no_image.

`tags_only` is how the training loop keeps a reply in context: every
`<(answer|search|think|bbox)>(.*?)</\\1>` match, in order, joined with newlines.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field, replace

from agent.prompts import feedback_text

THINK_RE = re.compile(r"<think>(.*?)</think>", re.DOTALL)
ACTION_RE = re.compile(r"<(search|answer|bbox)>(.*?)</\1>", re.DOTALL)
TAG_RE = re.compile(r"<(answer|search|think|bbox)>(.*?)</\1>", re.DOTALL)  # the training loop's extract_tags
TAGS = ("think", "search", "bbox", "answer")
RULES = ("strict", "training")  # which replies are invalid: parse_reply + check_action, or the training loop's
BBOX_TOLERANCE = 28  # model pixels a box may overshoot the image edge (one visual token)


@dataclass(frozen=True)
class ParsedReply:
    text: str
    thought: str | None = None  # inside the first <think>...</think>, stripped
    action: str | None = None  # "search", "bbox" or "answer": the reference's first match
    argument: str = ""  # the first match's content, stripped
    raw_action: str = ""  # the first match including its tags
    bbox: tuple[float, float, float, float] | None = None  # parsed when action == "bbox" and well-formed
    extra_actions: tuple[str, ...] = field(default_factory=tuple)  # names of complete actions after the first
    error_code: str | None = None  # a key of agent.prompts.FEEDBACK
    error: str | None = None  # human-readable, for the trajectory
    detail: str = ""  # the specific problem, quoted in the feedback

    @property
    def valid(self) -> bool:
        return self.error_code is None

    @property
    def feedback(self) -> str | None:
        """The short user message telling the model what was wrong, or None if nothing was."""
        return None if self.error_code is None else feedback_text(self.error_code, self.detail)


def _fail(base: ParsedReply, code: str, message: str, detail: str = "") -> ParsedReply:
    return replace(base, error_code=code, error=f"{message}: {detail}" if detail else message, detail=detail)


def _unclosed(text: str) -> str | None:
    """The first tag opened more often than closed, e.g. '<answer>' in '<answer> 42'."""
    for tag in TAGS:
        if text.count(f"<{tag}>") > text.count(f"</{tag}>"):
            return f"<{tag}>"
    return None


def parse_bbox(argument: str) -> tuple[tuple[float, float, float, float] | None, str | None]:
    """(box, None) for a well-formed `[x1, y1, x2, y2]`, else (None, reason). Never raises."""
    try:
        value = json.loads(argument)
    except (ValueError, RecursionError):
        return None, f"not JSON: {argument[:60]!r}"
    if not isinstance(value, list):
        return None, f"expected a list [x1, y1, x2, y2], got {type(value).__name__}"
    if len(value) != 4:
        return None, f"expected 4 numbers, got {len(value)} values"
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        return None, "expected 4 numbers, got " + ", ".join(type(v).__name__ for v in value)
    try:
        box = tuple(float(v) for v in value)
    except OverflowError:  # an int too large for a float
        return None, "coordinates must be finite numbers"
    if not all(math.isfinite(v) for v in box):
        return None, "coordinates must be finite numbers (no NaN or Infinity)"
    if min(box) < 0:
        return None, f"coordinates must not be negative: {list(value)}"
    if box[2] <= box[0] or box[3] <= box[1]:
        return None, f"need x1 < x2 and y1 < y2: {list(value)}"
    return box, None  # type: ignore[return-value]


def parse_reply(text: str) -> ParsedReply:
    """Parse one model reply. Pure; never raises, whatever `text` holds."""
    if not isinstance(text, str):
        text = "" if text is None else str(text)
    base = ParsedReply(text=text)
    think = THINK_RE.search(text)
    actions = list(ACTION_RE.finditer(text))
    if actions:
        first = actions[0]
        base = ParsedReply(
            text=text,
            thought=think.group(1).strip() if think else None,
            action=first.group(1),
            argument=first.group(2).strip(),
            raw_action=first.group(0),
            extra_actions=tuple(m.group(1) for m in actions[1:]),
        )
    elif think:
        base = ParsedReply(text=text, thought=think.group(1).strip())

    if not text.strip():
        return _fail(base, "empty_reply", "empty reply")
    tag = _unclosed(text)
    if tag:
        return _fail(base, "unclosed_tag", "unclosed tag", tag)
    if think is None:
        return _fail(base, "missing_think", "missing <think> ... </think>")
    if base.action is None:
        return _fail(base, "no_action", "no <search>, <bbox> or <answer> action")
    if base.extra_actions:
        names = ", ".join(f"<{a}>" for a in (base.action, *base.extra_actions))
        return _fail(base, "multiple_actions", "more than one action", names)
    if base.action == "search" and not base.argument:
        return _fail(base, "empty_search", "empty search query")
    if base.action == "answer" and not base.argument:
        return _fail(base, "empty_answer", "empty answer")
    if base.action == "bbox":
        box, reason = parse_bbox(base.argument)
        if box is None:
            return _fail(base, "bbox_format", "bad bbox", reason)
        return replace(base, bbox=box)
    return base


def check_bbox(box, input_size: tuple[int, int], tolerance: float = BBOX_TOLERANCE) -> str | None:
    """None if `box` may be cropped from an image of `input_size` (w, h), else the reason."""
    w, h = input_size
    x1, y1, x2, y2 = box
    if x1 >= w or y1 >= h or x2 > w + tolerance or y2 > h + tolerance:
        return f"{[_num(v) for v in box]} is outside the {w}x{h} image"
    return None


def check_action(parsed: ParsedReply, last_input_size: tuple[int, int] | None) -> ParsedReply:
    """Add the checks that need the episode state: is there an image to crop, is the box inside it."""
    if not parsed.valid or parsed.action != "bbox":
        return parsed
    if last_input_size is None:
        return _fail(parsed, "bbox_no_image", "bbox before any image was shown")
    reason = check_bbox(parsed.bbox, last_input_size)
    if reason:
        return _fail(parsed, "bbox_outside", "bbox outside the image", reason)
    return parsed


def _num(v: float):
    return int(v) if float(v).is_integer() else v


# --- the training loop's rules ----------------------------------------------------------------------


def tags_only(text: str) -> str:
    """The reply as the training loop keeps it in context: its tag pairs only, joined with newlines."""
    return "\n".join(f"<{tag}>{content}</{tag}>" for tag, content in TAG_RE.findall(text or ""))


def parse_bbox_training(argument: str) -> tuple[tuple[float, float, float, float] | None, str | None]:
    """The training loop's bbox check: `json.loads`, then `len(b) == 4 and all(x >= 0 for x in b)`.

    (box, None) when it passes, else (None, reason). Never raises. Values are converted to floats
    (a JSON `true` is 1.0, as Python's `True >= 0` lets it through).
    """
    try:
        value = json.loads(argument)
    except (ValueError, RecursionError):
        return None, f"not JSON: {argument[:60]!r}"
    try:
        passes = len(value) == 4 and all(x >= 0 for x in value)
    except TypeError:  # no len() (a number), or items that do not compare with 0 (strings, lists, null)
        passes = False
    if not passes:
        return None, f"expected 4 numbers >= 0, got {argument[:60]}"
    try:
        box = tuple(float(v) for v in value)
    except (OverflowError, TypeError, ValueError):
        return None, f"coordinates must be numbers that fit a float, got {argument[:60]}"
    return box, None  # type: ignore[return-value]


def parse_training(text: str) -> ParsedReply:
    """Parse one reply by the training loop's rules (see the module docstring). Pure; never raises."""
    if not isinstance(text, str):
        text = "" if text is None else str(text)
    think = THINK_RE.search(text)
    first = ACTION_RE.search(text)
    thought = think.group(1).strip() if think else None
    if first is None:
        base = ParsedReply(text=text, thought=thought)
        if not text.strip():
            return _fail(base, "empty_reply", "empty reply")
        tag = _unclosed(text)
        if tag:
            return _fail(base, "unclosed_tag", "unclosed tag", tag)
        return _fail(base, "no_action", "no <search>, <bbox> or <answer> action")
    base = ParsedReply(text=text, thought=thought, action=first.group(1), argument=first.group(2).strip(),
                       raw_action=first.group(0))
    if base.action != "bbox":
        return base
    box, reason = parse_bbox_training(base.argument)
    if box is None:
        return _fail(base, "bbox_format", "bad bbox", reason)
    return replace(base, bbox=box)


def check_training(parsed: ParsedReply, has_page: bool) -> ParsedReply:
    """The training loop's one state check: a bbox needs a retrieved page (the crop decides the rest)."""
    if parsed.valid and parsed.action == "bbox" and not has_page:
        return _fail(parsed, "bbox_no_image", "bbox before any page was retrieved")
    return parsed


def read_reply(text: str, rules: str, last_input_size: tuple[int, int] | None) -> ParsedReply:
    """Parse and check a reply by `rules` ("strict" or "training"), given the last image's size (None: no image yet)."""
    if rules == "strict":
        return check_action(parse_reply(text), last_input_size)
    if rules == "training":
        return check_training(parse_training(text), last_input_size is not None)
    raise ValueError(f"unknown reply rules {rules!r}; use one of {', '.join(RULES)}")
