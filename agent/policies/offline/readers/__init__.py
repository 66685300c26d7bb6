"""Special readers: plug-ins for page structures that support scoring (scoring.py) cannot read.

Each reader is one module with `applies(question) -> bool` and `read(page, weights) -> Candidate |
None`, and a docstring saying what it reads and why scoring cannot. `READERS` is the registry, in
the order readers are asked: the first that applies to the question and finds something answers;
when none does, the best-scored candidate does.
"""
from __future__ import annotations

from dataclasses import replace
from types import ModuleType

from ..page import Page
from ..scoring import Candidate, rank_candidates
from ..weights import Weights
from . import bar_lengths, contact, document, item_list, printed_values, table_extreme

READERS: tuple[ModuleType, ...] = (document, contact, bar_lengths, printed_values, table_extreme, item_list)


def best_answer(page: Page, weights: Weights, readers: tuple[ModuleType, ...] = READERS) -> Candidate | None:
    """The answer on one image: the first applicable reader's, else the best-scored candidate."""
    for reader in readers:
        if reader.applies(page.question):
            found = reader.read(page, weights)
            if found is not None:
                return replace(found, reader=reader.__name__.rsplit(".", 1)[-1])
    ranked = rank_candidates(page, weights)
    return ranked[0] if ranked else None
