"""One image as the offline policy's rules read it against one question: its lines, the question's
terms on each line, and what is worked out from them once (spans, paragraphs, term weights)."""
from __future__ import annotations

import math
from functools import cached_property

import numpy as np

from search_engine.types import TextBox

from .layout import tall_lines, title_lines
from .prose import Block, Phrase, blocks_of, phrases_of
from .question import Question
from .spans import Span, spans_of
from .terms import matched_terms, terms_of


class Page:
    """`boxes` are OCR lines in the pixels of the image (`size`); `pixels` (an RGB array) lets a
    reader measure what OCR cannot read, such as bar lengths."""

    def __init__(self, boxes: list[TextBox], size: tuple[int, int], question: Question, pixels: np.ndarray | None = None):
        self.boxes, self.size, self.question, self.pixels = boxes, size, question, pixels
        self.terms = [terms_of(b.text) for b in boxes]
        self.matched = [matched_terms(t, question.terms) for t in self.terms]  # question terms on each line
        self.anchors: dict[str, list[int]] = {}  # question term -> the lines holding it
        for i, found in enumerate(self.matched):
            for term in sorted(found):
                self.anchors.setdefault(term, []).append(i)
        self.tall = tall_lines(boxes)  # big type: titles and headings
        self.titles = title_lines(boxes, size)  # slide titles

    @property
    def match(self) -> float:
        """Share of the question's term weight found on the image (0..1)."""
        total = sum(self.question.terms.values())
        return sum(self.question.terms[t] for t in self.anchors) / total if total else 0.0

    @cached_property
    def weights(self) -> dict[str, float]:
        """Term weights for this image: a term on many lines (a title word repeated in headers) says
        less about where the answer is than one on a single line (a row label)."""
        return {t: w / math.sqrt(len(self.anchors[t])) if t in self.anchors else w for t, w in self.question.terms.items()}

    @cached_property
    def spans(self) -> list[Span]:
        return spans_of(self.boxes)

    @cached_property
    def blocks(self) -> list[Block]:
        return blocks_of(self.boxes, self.size)

    @cached_property
    def phrases(self) -> list[Phrase]:
        return phrases_of(self.blocks, self.question)

    def line_weight(self, i: int) -> float:
        return sum(self.weights[t] for t in self.matched[i])
