"""Every piece of text the agent sends to a model, as data.

The first three strings are the released VRAG protocol (../shared/notes/vrag-protocol.md) and must
stay byte-identical to the reference client: the released checkpoints were trained on them.

Two ways to answer a malformed reply, chosen by the protocol profile (agent/protocol.py):
- "fixed": the training loop's two user turns (VRAG-RL/vrag_agent/generation.py), verbatim, which
  the released model saw throughout RL training: one for a reply with no action, one for a bbox
  that cannot be cropped;
- "specific": our short messages (FEEDBACK), each saying what exactly was wrong. The demo client
  has no recovery path (it crashes), so these are ours, for models that benefit from them.
"""
from __future__ import annotations

# The reference prompt, verbatim (note the trailing newline after the question).
PROMPT_TEMPLATE = (
    "Answer the given question. You must conduct reasoning inside <think> and </think> first every time you get "
    "new information. After reasoning, if you find you lack some knowledge, you can call a search engine by "
    "<search> query </search> and user will return the searched results. Every time you retrieve an image, you "
    "have the option to crop it to obtain a clearer view, the format for coordinates is <bbox>[x1, y1, x2, y2]</bbox>. "
    "You can search as many times as your want. If you find no further external knowledge needed, you can "
    "directly provide the answer inside <answer> and </answer>, without detailed illustrations. For example, "
    "<answer> Beijing </answer>. Question: {question}\n"
)

# Appended to the observation that precedes the last model call of the budget.
FINAL_TURN_NUDGE = "please answer the question now with answer in <answer> ... </answer>"

# The answer recorded when the budget runs out without an <answer>.
NO_ANSWER = "Sorry, I can not retrieval something about the question."

_ACTIONS = "<search> query </search>, <bbox>[x1, y1, x2, y2]</bbox> or <answer> ... </answer>"

# One short user message per kind of malformed reply (keys are `ParsedReply.error_code` values).
# `{detail}` is filled with the specific problem (e.g. the image size); see agent/parsing.py.
FEEDBACK = {
    "empty_reply": "Your reply was empty. Reason inside <think> ... </think>, then give one action: " + _ACTIONS + ".",
    "missing_think": "Your reply had no <think> ... </think>. Reason inside <think> ... </think> first, then give one action.",
    "unclosed_tag": "Your reply opens {detail} but never closes it. Close every tag, e.g. <search> query </search>.",
    "no_action": "Your reply had no action. After </think>, give exactly one of: " + _ACTIONS + ".",
    "multiple_actions": "Your reply had more than one action ({detail}). Give exactly one action per reply.",
    "empty_search": "Your search query was empty. Write the query inside <search> ... </search>.",
    "empty_answer": "Your answer was empty. Write the answer inside <answer> ... </answer>.",
    "bbox_format": "Your bbox could not be used: {detail}. Write four pixel numbers: <bbox>[x1, y1, x2, y2]</bbox>.",
    "bbox_no_image": "There is no image to crop yet. Search first with <search> query </search>.",
    "bbox_outside": "Your bbox {detail}. Give a box inside the image, in its pixels.",
    "bbox_crop_failed": "Your bbox {detail}, so there was nothing to crop. Give a box inside the image, in its pixels.",
    # not a parse error: the search engine refused the query (search_engine/query.py)
    "bad_query": "The search engine refused your query: {detail}. Write a shorter query inside <search> ... </search>.",
}

# Told instead of an image when a search brings back only pages already shown in this episode
# (each page is shown at most once), or nothing at all.
ALL_PAGES_SHOWN = "All pages found for this query were already shown to you. Try a different query or answer."
NO_PAGES_FOUND = "The search found no pages for this query. Try a different query."

# The training loop's answers to a malformed reply, verbatim ("The training loop differs from the
# demo client" in the protocol note). Which replies get which is decided in agent/parsing.py.
TRAINING_NO_ACTION = (
    "Your previous action is invalid. You must conduct reasoning inside <think> and </think> first every time you get "
    "new information. After reasoning, if you want to search, you should put the query between <search> and </search>.\n"
    "If you find no further external knowledge needed, you can directly provide the answer inside <answer> and </answer>, "
    "without detailed illustrations. For example, <answer> Beijing </answer>. Please try again."
)
TRAINING_BAD_BBOX = (
    "Your previous action is invalid. You must conduct reasoning inside <think> and </think> first every time you get "
    "new information. After reasoning, if you find you lack some knowledge, you can call a search engine by "
    "<search> query </search> and user will return the searched results. Every time you retrieve an image, you "
    "have the option to crop it to obtain a clearer view, the format for coordinates is <bbox>[x1, y1, x2, y2]</bbox>. "
    "You can search as many times as your want. If you find no further external knowledge needed, you can "
    "directly provide the answer inside <answer> and </answer>, without detailed illustrations. For example, "
    "<answer> Beijing </answer>. Please try again."
)
# The training loop writes each of these turns as "<|im_start|>user\n" + text + "\n<|im_end|>": the
# text is followed by a newline inside the turn. A chat template renders a text part as
# "<|im_start|>user\n" + text + "<|im_end|>", so the newline is part of the text we send, and the
# model gets the very tokens it was trained on.
TRAINING_TURN_END = "\n"

# Which fixed message answers which error code (agent/parsing.py). A query our search engine refuses
# has no counterpart in the training loop (its engine takes any text); it gets the message about
# how to search.
_FIXED = {
    "empty_reply": TRAINING_NO_ACTION,
    "unclosed_tag": TRAINING_NO_ACTION,
    "no_action": TRAINING_NO_ACTION,
    "bad_query": TRAINING_NO_ACTION,
    "bbox_format": TRAINING_BAD_BBOX,
    "bbox_no_image": TRAINING_BAD_BBOX,
    "bbox_crop_failed": TRAINING_BAD_BBOX,
}
FEEDBACK_STYLES = ("specific", "fixed")

_PREFIX, _SUFFIX = PROMPT_TEMPLATE.split("{question}")


def render_prompt(question: str) -> str:
    """The first user message's text for `question` (plain substitution: braces in it are kept)."""
    return _PREFIX + question + _SUFFIX


def question_from_prompt(text: str) -> str:
    """Read the question back out of a rendered prompt (the offline policy sees only messages)."""
    if not (text.startswith(_PREFIX) and text.endswith(_SUFFIX)):
        raise ValueError("text is not a VRAG prompt (it does not match agent.prompts.PROMPT_TEMPLATE)")
    return text[len(_PREFIX) : len(text) - len(_SUFFIX)]


def feedback_text(error_code: str, detail: str = "") -> str:
    """The short user message for a malformed reply."""
    return FEEDBACK[error_code].format(detail=detail)


def feedback_message(style: str, error_code: str, detail: str = "") -> str:
    """The user text answering a malformed reply: "specific" (FEEDBACK) or "fixed" (the training loop's)."""
    if style == "fixed":
        return _FIXED[error_code] + TRAINING_TURN_END
    if style == "specific":
        return feedback_text(error_code, detail)
    raise ValueError(f"unknown feedback style {style!r}; use one of {', '.join(FEEDBACK_STYLES)}")

# The optional LLM judge (agent/rewards.py): one user message, verdict in <judge>True or False</judge>.
JUDGE_PROMPT = (
    "You are grading an answer to a question about a document.\n"
    "Question: {question}\n"
    "Reference answer: {reference}\n"
    "Model answer: {prediction}\n"
    "Does the model answer state the same fact as the reference answer (wording, units and formatting may differ)? "
    "Reply with <judge>True</judge> or <judge>False</judge> and nothing else."
)
