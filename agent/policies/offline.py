"""The offline policy: answers VRAG questions with OCR and keyword rules, with NO vision-language model.

It exists so the demo runs on a laptop with no GPU and no weights. It speaks the exact protocol the
released model speaks (`<think>` then one of `<search>`, `<bbox>`, `<answer>`), reading only the
conversation the real model would be sent: the prompt, its own earlier replies, and the observation
images (base64 JPEGs). Its bboxes are pixels of the last image it received, so the loop's real crop
code runs on them. Every reply's <think> and its `describe()` say plainly that no model reasoned.

The plan it follows, turn by turn (decided from the messages alone, so it is deterministic and a
saved trajectory replays exactly):
1. search with the question's key terms;
2. on a page: OCR it; if it holds too few of the question's terms, search again (the loop shows the
   next unseen page), up to `max_searches`; otherwise emit the region around the best-supported
   candidate answer and the lines that support it (agent/policies/offline_rules.py);
3. on the zoomed crop: OCR it again, sharper, and answer with the best-supported span; but if the
   page lacked some of the question's terms, first search once more: if the next page holds every
   term, zoom into it instead, else answer from the first crop;
4. when the loop nudges for a final answer, answer with the best evidence seen so far.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import io
import logging
import re
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, UnidentifiedImageError

from agent.parsing import ParsedReply, parse_reply
from agent.policies.base import Completion, PolicyError
from agent.policies.offline_document import cover_likeness
from agent.policies.offline_question import MAX_QUERY, Question, analyse_question, page_match
from agent.policies.offline_rules import Candidate, answer_on_crop, choose_region
from agent.prompts import FINAL_TURN_NUDGE, question_from_prompt
from search_engine.types import TextBox

log = logging.getLogger(__name__)

DESCRIPTION = "offline heuristic policy: OCR + keyword matching, no vision-language model"
HONEST_PREFIX = "[offline heuristic policy: OCR + keyword rules, no vision-language model] "
NOT_FOUND = "not found"  # the answer when OCR found nothing of the kind the question asks for


# --- reading the conversation --------------------------------------------------------------------


@dataclass
class Step:
    """One of the policy's own earlier replies and what came back after it."""

    reply: ParsedReply
    image: bytes | None = None  # JPEG bytes of the observation image, if any
    text: str = ""  # feedback text (final-turn nudge, error hint, "all pages shown")


@dataclass
class Conversation:
    question: str
    steps: list[Step] = field(default_factory=list)

    @property
    def nudged(self) -> bool:
        """The loop asked for the answer now (the final-turn nudge is in the last observation)."""
        return bool(self.steps) and FINAL_TURN_NUDGE in self.steps[-1].text

    @property
    def searches(self) -> int:
        return sum(1 for s in self.steps if s.reply.action == "search")


def _text_of(content) -> str:
    if isinstance(content, str):
        return content
    return "\n".join(p.get("text", "") for p in content or [] if isinstance(p, dict) and p.get("type") == "text")


def _image_of(content) -> bytes | None:
    for part in content or []:
        if isinstance(part, dict) and part.get("type") == "image_url":
            url = (part.get("image_url") or {}).get("url", "")
            _, _, data = url.partition("base64,")
            try:
                return base64.b64decode(data, validate=True)
            except (binascii.Error, ValueError) as e:
                raise PolicyError(f"offline policy: an observation image is not valid base64 ({e})") from e
    return None


def read_conversation(messages: list[dict]) -> Conversation:
    """The question, and each earlier reply paired with the user message that answered it."""
    if not messages or messages[0].get("role") != "user":
        raise PolicyError("offline policy: the conversation must start with the user's prompt")
    try:
        question = question_from_prompt(_text_of(messages[0].get("content")))
    except ValueError as e:
        raise PolicyError(f"offline policy: {e}") from e
    conv = Conversation(question)
    for message in messages[1:]:
        if message.get("role") == "assistant":
            conv.steps.append(Step(parse_reply(_text_of(message.get("content")))))
        elif message.get("role") == "user" and conv.steps:
            content = message.get("content")
            step = conv.steps[-1]
            step.image = _image_of(content) if not isinstance(content, str) else None
            step.text = _text_of(content)
    return conv


def decode_image(jpeg: bytes) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(jpeg))
        image.load()
    except (OSError, UnidentifiedImageError) as e:
        raise PolicyError(f"offline policy: an observation image could not be decoded ({e})") from e
    return image.convert("RGB")


# --- the policy ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Evidence:
    """What the rules found on one image the policy saw."""

    step: int  # index of the step whose observation this is
    kind: str  # "page" or "crop"
    size: tuple[int, int]
    lines: int  # OCR lines read
    match: float  # share of the question's term weight found on the image
    candidate: Candidate | None
    region: tuple[float, float, float, float] | None = None

    @property
    def strength(self) -> float:
        """How much to trust this image's answer: crops over pages, better matches first."""
        return (self.candidate.score if self.candidate else 0.0) * (0.5 + self.match) + (0.5 if self.kind == "crop" else 0.0)


class OfflinePolicy:
    """Rule-based stand-in for the VRAG model (see module docstring). Not a model: no learned weights
    beyond the OCR engine's text detector and recogniser.

    `ocr` is a `search_engine.ocr.OcrEngine`; if omitted, the one of `index` (a DocumentIndex) is
    borrowed, else one is built on first use. The index is used for nothing else: the policy sees
    only the conversation, like the real model.
    """

    name = "offline"

    def __init__(self, ocr=None, index=None, max_searches: int = 5, min_page_match: float = 0.4, cache_size: int = 64):
        if max_searches < 1:
            raise ValueError(f"max_searches must be at least 1, got {max_searches}")
        self._ocr = ocr
        self._index = index
        self.max_searches = max_searches
        self.min_page_match = min_page_match
        self._cache: OrderedDict[str, tuple[list[TextBox], tuple[int, int]]] = OrderedDict()
        self._cache_size = cache_size

    def describe(self) -> dict:
        return {
            "name": self.name,
            "model": "none (rapidocr OCR + keyword rules)",
            "description": DESCRIPTION,
            "settings": {"max_searches": self.max_searches, "min_page_match": self.min_page_match},
        }

    # OCR, cached by image bytes: a page shown in several episodes is read once.
    @property
    def ocr(self):
        if self._ocr is None:
            if self._index is not None:
                self._ocr = self._index.ocr
            else:
                try:
                    from search_engine.ocr import OcrEngine

                    self._ocr = OcrEngine()
                except ImportError as e:
                    raise PolicyError(f"the offline policy needs rapidocr for OCR ({e}); pip install -r requirements.txt") from e
        return self._ocr

    def read(self, jpeg: bytes) -> tuple[list[TextBox], tuple[int, int]]:
        key = hashlib.sha1(jpeg).hexdigest()
        if key not in self._cache:
            image = decode_image(jpeg)
            self._cache[key] = (self.ocr.read(image), image.size)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        self._cache.move_to_end(key)
        return self._cache[key]

    def evidence(self, conv: Conversation, question: Question) -> list[Evidence]:
        """Evidence from every image seen so far, in order."""
        found = []
        for i, step in enumerate(conv.steps):
            if step.image is None:
                continue
            boxes, size = self.read(step.image)
            pixels = np.asarray(decode_image(step.image))
            match = page_match(boxes, question)
            if question.document_part and not question.terms:  # "这个演讲的标题是什么": nothing to match but a cover
                match = cover_likeness(boxes, question.document_part)
            if step.reply.action == "bbox":
                # the crop was cut to read the candidate chosen on the image before it
                parent = found[-1].candidate if found and found[-1].candidate else None
                cand = answer_on_crop(boxes, question, size, parent.span.text if parent else None, pixels,
                                      structural=bool(parent and parent.note))
                found.append(Evidence(i, "crop", size, len(boxes), match, cand))
            else:
                choice = choose_region(boxes, question, size, pixels)
                found.append(Evidence(i, "page", size, len(boxes), match,
                                      choice.candidate if choice else None, choice.region if choice else None))
        return found

    def complete(self, messages: list[dict]) -> Completion:
        conv = read_conversation(messages)
        question = analyse_question(conv.question)
        if not question.text.strip():
            return _reply("The question is empty: there is nothing to search for.", "answer", NOT_FOUND)
        if not conv.steps:
            return _reply(_plan_text(question), "search", question.query)
        seen = self.evidence(conv, question)
        last = conv.steps[-1]
        current = seen[-1] if seen and seen[-1].step == len(conv.steps) - 1 else None
        if conv.nudged or current is None and conv.searches >= self.max_searches:
            return self._answer(seen, "The loop asks for the answer now." if conv.nudged else "No new page to look at.")
        if current is None:  # the search showed nothing new: try the whole question as the query
            return _reply(f"The last search showed no new page ({last.text.strip() or 'no image'}). "
                          "Searching again with the whole question.", "search", question.text[:MAX_QUERY])
        crops = [e for e in seen if e.kind == "crop"]
        if current.kind == "crop":
            page = seen[-2] if len(seen) >= 2 else None
            if (len(crops) == 1 and page is not None and page.match < 0.999 and conv.searches < self.max_searches):
                # the page lacked some of the question's words: a better page may come next in the results
                read = f'"{current.candidate.span.text}"' if current.candidate else "nothing of the kind asked for"
                return _reply(f"Read the zoomed region again with OCR: {read}. The page held only {page.match:.0%} of "
                              "the question's key-term weight, so checking the next search result before answering.",
                              "search", question.query)
            return self._answer(seen, "Read the zoomed region again with OCR.")
        # a page
        summary = (f"OCR read {current.lines} text lines on this page; it holds {current.match:.0%} "
                   f"of the question's key-term weight.")
        if crops:  # a second look after a crop: zoom in here only if this page holds the whole question
            first_page = seen[seen.index(crops[0]) - 1]
            # only a page holding every term the first one lacked is worth the switch: one that merely holds
            # more of them trades the first page's missing words for others
            if current.candidate is None or current.match < 0.999:
                return self._answer(seen, f"{summary} It does not hold all of the question's terms either; answering "
                                          f"from the zoomed region of the page before ({first_page.match:.0%}).", prefer=crops[0])
        if current.match < self.min_page_match or current.candidate is None:
            if conv.searches < self.max_searches:
                why = "no candidate of the kind asked for" if current.candidate is None else "too few question terms"
                return _reply(f"{summary} That is {why}; searching again for the next page.", "search", question.query)
            best = max(seen, key=lambda e: e.match)
            if best is not current:
                return self._answer(seen, f"{summary} Searches used up; the best-matching page was an earlier one.")
        cand = current.candidate
        if cand is None:
            return self._answer(seen, f"{summary} Nothing on it looks like the answer.")
        box = [int(v) for v in current.region]
        return _reply(f"{summary} Best-supported candidate: \"{cand.span.text}\" ({cand.explain()}). "
                      "Cropping that region to read it at a higher resolution.", "bbox", f"[{box[0]}, {box[1]}, {box[2]}, {box[3]}]")

    def _answer(self, seen: list[Evidence], why: str, prefer: Evidence | None = None) -> Completion:
        usable = [e for e in seen if e.candidate is not None]
        if not usable:
            return _reply(f"{why} No image seen so far held text of the kind the question asks for.", "answer", NOT_FOUND)
        # the chosen crop, or the latest crop (what its region was chosen for), or else the strongest evidence
        crops = [e for e in usable if e.kind == "crop"]
        if prefer is not None and prefer.candidate is not None:
            best = prefer
        elif crops and crops[-1].step == usable[-1].step:
            best = crops[-1]
        else:
            best = max(usable, key=lambda e: (e.strength, -e.step))
        cand = best.candidate
        where = "the zoomed region" if best.kind == "crop" else "a page"
        return _reply(f"{why} On {where}, \"{cand.span.text}\" is the best-supported candidate ({cand.explain()}).",
                      "answer", clean_answer(cand.span.text))


def clean_answer(text: str) -> str:
    """OCR puts spaces between Chinese characters where a line wraps or a gap is wide; Chinese has none."""
    return re.sub(r"(?<=[\u4e00-\u9fff])\s+(?=[\u4e00-\u9fff])", "", text).strip()


def _plan_text(question: Question) -> str:
    terms = ", ".join(list(question.terms)[:8]) or "(none)"
    return f"Key terms from the question: {terms}. Expected answer: {_KIND_TEXT[question.answer_kind]}. Searching for them."


_KIND_TEXT = {"percent": "a percentage", "date": "a date", "year": "a year", "number": "a number", "value": "a number or percentage",
              "text": "a short phrase"}


def _reply(thought: str, action: str, argument: str) -> Completion:
    thought = " ".join((HONEST_PREFIX + thought).split())
    # keep tags out of the thought and the argument, so our own parser reads exactly one action
    thought = thought.replace("<", "‹").replace(">", "›")
    argument = " ".join(argument.split()).replace("<", "‹").replace(">", "›")
    return Completion(text=f"<think>{thought}</think>\n<{action}>{argument}</{action}>")
