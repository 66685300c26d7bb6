"""Small records the search engine hands out: text boxes, pages, hits and ingest reports.

They are plain dataclasses so that the CLI, the HTTP API, the agent and the app can all
serialise them to JSON without knowing how the index stores them.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class TextBox:
    """One word or line of text on a page, in page-image pixel coordinates (x1, y1, x2, y2)."""

    text: str
    box: tuple[float, float, float, float]
    confidence: float = 1.0  # OCR confidence; 1.0 for a PDF text layer

    def to_dict(self) -> dict:
        return {"text": self.text, "box": list(self.box), "confidence": self.confidence}

    @classmethod
    def from_dict(cls, d: dict) -> "TextBox":
        return cls(text=d["text"], box=tuple(float(v) for v in d["box"]), confidence=float(d.get("confidence", 1.0)))


@dataclass
class Page:
    """One indexed page: a stored page image plus its text with boxes.

    `page_id` follows the reference naming: `{pdf_stem}_{page}` (1-based) for PDF pages and the
    file stem for single images. `image_file` is an absolute path inside the index folder.
    """

    page_id: str
    source: str  # the source file the page came from (absolute path)
    page: int  # 1-based page number within the source
    image_file: str
    width: int
    height: int
    text_source: str  # "pdf" (text layer), "ocr", or "none"
    boxes: list[TextBox] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "\n".join(b.text for b in self.boxes)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["boxes"] = [b.to_dict() for b in self.boxes]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Page":
        d = dict(d)
        d["boxes"] = [TextBox.from_dict(b) for b in d.get("boxes", [])]
        return cls(**d)


@dataclass(frozen=True)
class SearchHit:
    """One ranked result. `score` is the fused score; `scores` holds each retriever's own score."""

    rank: int  # 1-based
    score: float
    page_id: str
    image_file: str
    source: str
    page: int
    scores: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "SearchHit":
        return cls(
            rank=int(d["rank"]),
            score=float(d["score"]),
            page_id=str(d["page_id"]),
            image_file=str(d["image_file"]),
            source=str(d.get("source", "")),
            page=int(d.get("page", 1)),
            scores={k: float(v) for k, v in d.get("scores", {}).items()},
        )


@dataclass(frozen=True)
class SkippedFile:
    """A path ingest could not use, and why. `kind`: "file", "folder" (could not be listed; what was
    indexed under it is kept) or "link" (a broken link, or a linked folder, which is not followed)."""

    path: str
    reason: str
    kind: str = "file"


@dataclass
class IngestReport:
    """What one ingest did. Page ids in `added`/`removed`; files in `skipped` with a reason each."""

    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged_files: int = 0
    skipped: list[SkippedFile] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)
