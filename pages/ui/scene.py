"""What a turn's picture shows, decided from the trajectory record alone (no Streamlit, no images).

The turn view, the filmstrip, the overview, the episode graph and presentation mode all draw a
turn from its `Scene`: the image the turn acted on or read from, the outlines drawn on its page,
and words that name that image for a person ("turn 3 · crop of page slide_3_1024").

- search: the page the search showed the model (None when every hit was shown before);
- bbox: the page the crop was taken from, with the model's bbox, the padded crop, and (for a
  crop of a crop) the earlier crop it acted on;
- answer / invalid: the last image the model saw (a page or a crop), drawn as exactly that region.
Boxes are page pixels (agent/trajectory.py). Maps (relevance, attention) are drawn over the scene's
image by the caller; `relevance_query` says what the retrieval relevance map scores.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from agent.trajectory import Box, ImageView, Trajectory, Turn

BBOX = "model's bbox"
CROP = "padded crop"
PREVIOUS = "image acted on"
GOLD = "reference evidence"

COLOURS = {BBOX: "#1f77b4", CROP: "#d62728", PREVIOUS: "#6b6b6b", GOLD: "#1f9d55"}
DASHES = {BBOX: "solid", CROP: "solid", PREVIOUS: "dash", GOLD: "dot"}
FILLS = {GOLD: "rgba(31, 157, 85, 0.18)"}  # a small evidence box stays visible on a large page


@dataclass(frozen=True)
class Outline:
    box: tuple[float, float, float, float]  # page pixels
    name: str  # one of BBOX, CROP, PREVIOUS, GOLD: the legend entry and the layer switch

    @property
    def colour(self) -> str:
        return COLOURS[self.name]

    @property
    def dash(self) -> str:
        return DASHES[self.name]

    @property
    def fill(self) -> str:
        return FILLS.get(self.name, "rgba(0, 0, 0, 0)")


@dataclass
class Scene:
    turn: Turn
    view: ImageView | None  # the image drawn (its page, or just its region: see whole_page)
    whole_page: bool  # True: the view's whole page; False: only the view's region (what the model saw)
    outlines: list[Outline] = field(default_factory=list)
    role: str = ""  # "page shown", "page acted on", "last image the model saw"
    image_name: str = ""  # "page slide_3_1024 (shown in turn 1)" / "crop of page slide_3_1024 (shown in turn 2)"
    relevance_query: str = ""
    note: str = ""  # why there is no picture, when view is None

    @property
    def caption(self) -> str:
        """One line under the picture: what it is, for this turn."""
        if self.view is None:
            return self.note
        return f"Turn {self.turn.index + 1} · {self.role}: {self.image_name}"


def _box(box: Box) -> tuple[float, float, float, float]:
    return tuple(float(v) for v in box)  # type: ignore[return-value]


def source_turn(view: ImageView, trajectory: Trajectory) -> Turn | None:
    """The turn whose observation `view` is (the turn that showed that image to the model)."""
    return next((t for t in trajectory.turns if t.observation is not None and t.observation.file == view.file), None)


def image_name(view: ImageView, trajectory: Trajectory) -> str:
    """A person's name for an image the model saw: which page, a page or a crop, from which turn."""
    shown_by = source_turn(view, trajectory)
    kind = "crop of page" if shown_by is not None and shown_by.action == "bbox" else "page"
    when = f" (shown in turn {shown_by.index + 1})" if shown_by is not None else ""
    return f"{kind} {view.page_id}{when}"


def last_seen(turn: Turn, trajectory: Trajectory) -> ImageView | None:
    """The last image sent to the model before `turn` was produced."""
    for earlier in reversed(trajectory.turns[: turn.index]):
        if earlier.observation is not None:
            return earlier.observation
    return None


def relevance_query(turn: Turn, trajectory: Trajectory) -> str:
    """The query a turn's relevance map scores: the latest search up to this turn, else the question."""
    for earlier in reversed(trajectory.turns[: turn.index + 1]):
        if earlier.action == "search" and earlier.argument.strip():
            return earlier.argument
    return trajectory.question


def gold_outlines(trajectory: Trajectory, page_id: str) -> list[Outline]:
    boxes = (trajectory.gold or {}).get("boxes") or {}
    value = boxes.get(page_id)
    if not value:
        return []
    value = list(value)
    many = value and isinstance(value[0], (list, tuple))
    return [Outline(_box(b), GOLD) for b in (value if many else [value]) if len(b) == 4]


def scene(turn: Turn, trajectory: Trajectory) -> Scene:
    query = relevance_query(turn, trajectory)
    if turn.action == "search":
        view = turn.observation
        if view is None:
            note = "The search found nothing." if not turn.hits else "Every page found was shown before: the model saw no new page."
            return Scene(turn, None, True, relevance_query=query, note=note)
        return Scene(turn, view, True, gold_outlines(trajectory, view.page_id), "page shown to the model",
                     image_name(view, trajectory), query)
    if turn.action == "bbox" and turn.acted_on is not None and turn.bbox_page is not None:
        view = turn.acted_on
        outlines = gold_outlines(trajectory, view.page_id)
        if source_turn(view, trajectory) is not None and source_turn(view, trajectory).action == "bbox":
            outlines.append(Outline(_box(view.region), PREVIOUS))  # a crop of a crop: the crop it acted on
        if turn.bbox_model is not None:
            outlines.append(Outline(_box(view.model_to_page(turn.bbox_model)), BBOX))
        outlines.append(Outline(_box(turn.bbox_page), CROP))
        return Scene(turn, view, True, outlines, "cropped from", image_name(view, trajectory), query)
    view = last_seen(turn, trajectory)
    role = "answer read from the last image the model saw" if turn.action == "answer" else "the last image the model saw"
    if view is None:
        return Scene(turn, None, False, relevance_query=query, note="The model had seen no image yet.")
    return Scene(turn, view, False, [], role, image_name(view, trajectory), query)


def action_text(turn: Turn) -> str:
    """The action as the model wrote it, one line."""
    if turn.action == "bbox" and turn.bbox_model is not None:
        return "<bbox>[" + ", ".join(f"{v:g}" for v in turn.bbox_model) + "]</bbox>"
    if turn.action == "invalid":
        return f"invalid reply: {turn.error or 'unknown problem'}"
    return f"<{turn.action}>{turn.argument}</{turn.action}>"


def short_label(turn: Turn, width: int = 28) -> str:
    """A turn in a few words (filmstrip, graph): its action and argument, cut to `width` characters."""
    if turn.action == "bbox" and turn.observation is not None:
        text = f"crop of {turn.observation.page_id}"
    elif turn.action == "invalid":
        text = "invalid reply"
    else:
        text = turn.argument.strip().replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


def fusion_note(fusion: dict | None) -> str:
    """What a search hit's score means, for the index's fusion settings (search_engine/fusion.py)."""
    fusion = fusion or {}
    weights = fusion.get("weights") or {"dense": 1.0, "lexical": 1.0}
    total = sum(float(w) for w in weights.values())
    if fusion.get("method") == "rrf":
        k = float(fusion.get("rrf_k", 60.0))
        return (f"Reciprocal-rank fusion: each retriever (dense embeddings, BM25) adds weight / ({k:g} + its rank of the page). "
                "Only ranks count; the score orders pages within one search and is not comparable across searches.")
    return (f"Fused score from 0 to {total:g}: each retriever (dense embeddings and BM25 keywords) has its scores scaled to 0-1 "
            f"over this query's candidates, and the scaled scores are added (weights {', '.join(f'{n} {float(w):g}' for n, w in weights.items())}). "
            f"{total:.2f} means both retrievers ranked the page first. It orders pages within one search and is not comparable "
            "across searches; each retriever's own score is in the table of all hits.")


def short_id(page_id: str, width: int = 16) -> str:
    """A page id cut in the middle to `width` characters, keeping its end (the page number)."""
    if len(page_id) <= width:
        return page_id
    tail = width // 2
    return page_id[: width - tail - 1] + "…" + page_id[-tail:]
