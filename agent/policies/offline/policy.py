"""The offline policy: answers VRAG questions with OCR and rules, with NO vision-language model.

It exists so the demo runs on a laptop with no GPU and no weights. It speaks the protocol the
released model speaks (`<think>` then one of `<search>`, `<bbox>`, `<answer>`) and reads only the
conversation the real model would be sent (conversation.py). Its bboxes are pixels of the last
image it received, a page, so the loop's real crop code runs on them under every protocol profile.
Every reply's <think> and its `describe()` say plainly that no model reasoned; the thought names the
features and weights behind each choice (scoring.py, weights.py).

The plan, decided from the messages alone (deterministic, so a saved trajectory replays exactly):
1. search with the question's key terms (question.py);
2. on a page: OCR it; if it holds too little of the question, search again (the loop shows the next
   unseen page), up to `max_searches`; otherwise crop the region around the best candidate and the
   lines that support it (crop.py);
3. on the crop: OCR it again, sharper, and answer; but if the page lacked some of the question's
   terms, search once more first: zoom into the next page if it holds every term, else answer;
4. when the loop nudges for a final answer, answer with the best evidence seen so far.
"""
from __future__ import annotations

import hashlib
import re
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from agent.policies.base import Completion, PolicyError
from search_engine.types import TextBox

from .conversation import Conversation, decode_image, read_conversation
from .crop import answer_on_crop, choose_region
from .layout import Box
from .page import Page
from .question import MAX_QUERY, Question, analyse_question
from .readers.document import cover_likeness
from .scoring import Candidate
from .weights import Weights

DESCRIPTION = "offline heuristic policy: OCR + keyword matching, no vision-language model"
HONEST_PREFIX = "[offline heuristic policy: OCR + keyword rules, no vision-language model] "
NOT_FOUND = "not found"  # the answer when OCR found nothing of the kind the question asks for
_KIND_TEXT = {"percent": "a percentage", "date": "a date", "year": "a year", "number": "a number", "rank": "a place in a ranking",
              "value": "a number or percentage", "text": "a short phrase"}


@dataclass(frozen=True)
class Evidence:
    """What the rules found on one image the policy saw."""

    step: int  # index of the step whose observation this is
    kind: str  # "page" or "crop"
    lines: int  # OCR lines read
    match: float  # share of the question's term weight found on the image
    candidate: Candidate | None
    region: Box | None = None  # where to crop, on a page

    @property
    def strength(self) -> float:
        """How much to trust this image's answer: crops over pages, better matches first."""
        return (self.candidate.score if self.candidate else 0.0) * (0.5 + self.match) + (0.5 if self.kind == "crop" else 0.0)


class OfflinePolicy:
    """Rule-based stand-in for the VRAG model (see the module docstring); not a model.

    `ocr` is a `search_engine.ocr.OcrEngine`; if omitted, the one of `index` (a DocumentIndex) is
    borrowed, else one is built on first use. The index is used for nothing else: the policy sees
    only the conversation, like the real model. `weights` are the scoring weights (weights.py).
    """

    name = "offline"

    def __init__(self, ocr=None, index=None, max_searches: int = 5, min_page_match: float = 0.4, cache_size: int = 64,
                 weights: Weights | None = None):
        if max_searches < 1:
            raise ValueError(f"max_searches must be at least 1, got {max_searches}")
        self._ocr, self._index = ocr, index
        self.max_searches, self.min_page_match = max_searches, min_page_match
        self.weights = weights or Weights()
        self._cache: OrderedDict[str, tuple[list[TextBox], tuple[int, int]]] = OrderedDict()
        self._cache_size = cache_size

    def describe(self) -> dict:
        return {"name": self.name, "model": "none (rapidocr OCR + keyword rules)", "description": DESCRIPTION,
                "settings": {"max_searches": self.max_searches, "min_page_match": self.min_page_match}}

    @property
    def ocr(self):
        if self._ocr is None and self._index is not None:
            self._ocr = self._index.ocr
        if self._ocr is None:
            try:
                from search_engine.ocr import OcrEngine
            except ImportError as e:
                raise PolicyError(f"the offline policy needs rapidocr for OCR ({e}); pip install -r requirements.txt") from e
            self._ocr = OcrEngine()
        return self._ocr

    def read(self, jpeg: bytes) -> tuple[list[TextBox], tuple[int, int]]:
        """OCR lines and size of an image, cached by its bytes (a page shown in several episodes is read once)."""
        key = hashlib.sha1(jpeg).hexdigest()
        if key not in self._cache:
            image = decode_image(jpeg)
            self._cache[key] = (self.ocr.read(image), image.size)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        self._cache.move_to_end(key)
        return self._cache[key]

    def evidence(self, conv: Conversation, question: Question) -> list[Evidence]:
        """Evidence from every image seen so far, in order; a crop is read against the page's pick."""
        found: list[Evidence] = []
        for i, step in enumerate(conv.steps):
            if step.image is None:
                continue
            boxes, size = self.read(step.image)
            page = Page(boxes, size, question, np.asarray(decode_image(step.image)))
            match = page.match if question.terms or question.wants not in ("title", "presenter") else cover_likeness(boxes, question.wants)
            if step.reply.action == "bbox":
                parent = found[-1].candidate if found else None
                found.append(Evidence(i, "crop", len(boxes), match, answer_on_crop(page, self.weights, parent)))
            else:
                choice = choose_region(page, self.weights)
                found.append(Evidence(i, "page", len(boxes), match, *(choice or (None, None))))
        return found

    def complete(self, messages: list[dict]) -> Completion:
        conv = read_conversation(messages)
        question = analyse_question(conv.question)
        if not question.text.strip():
            return _reply("The question is empty: there is nothing to search for.", "answer", NOT_FOUND)
        if not conv.steps:
            terms = ", ".join(list(question.terms)[:8]) or "(none)"
            return _reply(f"Key terms from the question: {terms}. Expected answer: {_KIND_TEXT[question.kind]}. Searching for them.",
                          "search", question.query)
        seen = self.evidence(conv, question)
        current = seen[-1] if seen and seen[-1].step == len(conv.steps) - 1 else None
        if conv.nudged or current is None and conv.searches >= self.max_searches:
            return self._answer(seen, "The loop asks for the answer now." if conv.nudged else "No new page to look at.")
        if current is None:  # the search showed nothing new: try the whole question as the query
            return _reply(f"The last search showed no new page ({conv.steps[-1].text.strip() or 'no image'}). "
                          "Searching again with the whole question.", "search", question.text[:MAX_QUERY])
        crops = [e for e in seen if e.kind == "crop"]
        if current.kind == "crop":
            page = seen[-2] if len(seen) >= 2 else None
            if len(crops) == 1 and page is not None and page.match < 0.999 and conv.searches < self.max_searches:
                read = f'"{current.candidate.span.text}"' if current.candidate else "nothing of the kind asked for"
                return _reply(f"Read the zoomed region again with OCR: {read}. The page held only {page.match:.0%} of the "
                              "question's key-term weight, so checking the next search result before answering.", "search", question.query)
            return self._answer(seen, "Read the zoomed region again with OCR.")
        summary = f"OCR read {current.lines} text lines on this page; it holds {current.match:.0%} of the question's key-term weight."
        if crops and (current.candidate is None or current.match < 0.999):
            # a second look after a crop: zoom in here only if this page holds every term the first lacked
            first_page = seen[seen.index(crops[0]) - 1]
            return self._answer(seen, f"{summary} It does not hold all of the question's terms either; answering from the "
                                      f"zoomed region of the page before ({first_page.match:.0%}).", prefer=crops[0])
        if current.match < self.min_page_match or current.candidate is None:
            if conv.searches < self.max_searches:
                why = "no candidate of the kind asked for" if current.candidate is None else "too few question terms"
                return _reply(f"{summary} That is {why}; searching again for the next page.", "search", question.query)
            if max(seen, key=lambda e: e.match) is not current:
                return self._answer(seen, f"{summary} Searches used up; the best-matching page was an earlier one.")
            if current.candidate is None:
                return self._answer(seen, f"{summary} Nothing on it looks like the answer.")
        cand, box = current.candidate, [int(v) for v in current.region]
        return _reply(f'{summary} Best candidate: "{cand.span.text}" ({cand.explain()}). Cropping that region to read it at a '
                      "higher resolution.", "bbox", f"[{box[0]}, {box[1]}, {box[2]}, {box[3]}]")

    def _answer(self, seen: list[Evidence], why: str, prefer: Evidence | None = None) -> Completion:
        """Answer with the chosen crop, or the latest crop (what its region was chosen for), or the strongest evidence."""
        usable = [e for e in seen if e.candidate is not None]
        if not usable:
            return _reply(f"{why} No image seen so far held text of the kind the question asks for.", "answer", NOT_FOUND)
        crops = [e for e in usable if e.kind == "crop"]
        if prefer is not None and prefer.candidate is not None:
            best = prefer
        elif crops and crops[-1].step == usable[-1].step:
            best = crops[-1]
        else:
            best = max(usable, key=lambda e: (e.strength, -e.step))
        cand = best.candidate
        return _reply(f'{why} On {"the zoomed region" if best.kind == "crop" else "a page"}, "{cand.span.text}" is the best '
                      f"candidate ({cand.explain()}).", "answer", clean_answer(cand.span.text))


def clean_answer(text: str) -> str:
    """OCR puts spaces between Chinese characters where a line wraps or a gap is wide; Chinese has none."""
    return re.sub(r"(?<=[\u4e00-\u9fff])\s+(?=[\u4e00-\u9fff])", "", text).strip()


def _reply(thought: str, action: str, argument: str) -> Completion:
    """The reply text; tags are kept out of the thought and the argument, so a parser reads one action."""
    thought = " ".join((HONEST_PREFIX + thought).split()).replace("<", "‹").replace(">", "›")
    argument = " ".join(argument.split()).replace("<", "‹").replace(">", "›")
    return Completion(text=f"<think>{thought}</think>\n<{action}>{argument}</{action}>")
