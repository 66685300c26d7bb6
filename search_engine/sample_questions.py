"""The sample report's example questions (kept apart from sample_corpus.py, which draws the PDF
with PyMuPDF, so the app can list them without importing PyMuPDF at start-up).

They are the app's example questions on the sample index (agent/question_sets.py) and its
evaluation set there ("the sample report's questions" on the Evaluate page). `kind` says what on
the page holds the answer, as `meta_info.question_type` does in the reference dataset format.
"""
from __future__ import annotations

from dataclasses import dataclass

REPORT_STEM = "aurora_water_report_2025"


@dataclass(frozen=True)
class ExampleQuestion:
    question: str
    answer: str
    page_id: str  # the gold page, in the reference naming {stem}_{page}
    kind: str = "text"  # text, table, chart, or scanned text (the memo page, read by OCR)


EXAMPLE_QUESTIONS: tuple[ExampleQuestion, ...] = (
    ExampleQuestion(
        "When did the Kestrel Ridge treatment plant open?", "12 September 2025", f"{REPORT_STEM}_1", "text"
    ),
    ExampleQuestion(
        "How much water was delivered to the Hillcrest district in 2025?",
        "3,340 million litres",
        f"{REPORT_STEM}_2",
        "table",
    ),
    ExampleQuestion(
        "Which capital project had the largest spending in 2025, and how much was it?",
        "The Kestrel Ridge plant, EUR 42.7 million",
        f"{REPORT_STEM}_3",
        "chart",
    ),
    ExampleQuestion(
        "What water tariff did the board approve for 2026?", "EUR 2.15 per cubic metre", f"{REPORT_STEM}_4", "scanned text"
    ),
    ExampleQuestion("水务局的管网漏损率降到了多少？", "9.8%", f"{REPORT_STEM}_1", "text"),
)
