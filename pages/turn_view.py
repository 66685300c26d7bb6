"""One agent turn drawn as one row, used by the Ask page (live) and the Trajectories page (replay).

Columns, left to right: the model's thought and action; the search results (thumbnails with
scores and page ids, the page shown to the model marked); the page the action acted on with the
crop box drawn; the zoomed crop the model saw next; a heatmap over the page (retrieval relevance,
or the model's attention where the trajectory carries it) with its own opacity slider.

Model text is always drawn with `st.text` / `st.code` or escaped, never as markdown or HTML.
Images come from the index when it still has the page (full resolution), else from the JPEGs the
model saw, kept in the trajectory; every figure's axes are page pixels (agent/figures.py).
"""
from __future__ import annotations

import io
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import streamlit as st
from PIL import Image, ImageOps

from agent.trajectory import ImageView, Trajectory, Turn
from pages import common

log = logging.getLogger(__name__)

ROW_CELL_WIDTH = 250  # about the width of one row cell on a 1280 px wide window (pixels)
ROW_FIGURE_MIN_HEIGHT, ROW_FIGURE_MAX_HEIGHT = 140, 420
ROW_FIGURE_MAX_SIDE = 900  # pixels of the page image embedded in a row's figure (keeps reruns light)
THUMBNAILS = 6  # search hits drawn as thumbnails; the rest are listed
SHOWN_COLOUR = "#1f9d55"
CROP_COLOUR = "#d62728"
BBOX_COLOUR = "#1f77b4"
PARENT_COLOUR = "#7f7f7f"
COLUMNS = [1.3, 1.0, 1.3, 1.1, 1.3]
HEADERS = ["Thought and action", "Search results", "Page acted on", "Zoomed crop", "Heatmap"]


@dataclass
class TurnSource:
    """Where a turn's pictures come from.

    `folder` is the saved trajectory folder (None while only in memory); `index_folder` is the
    index the run searched, if this machine has it (for full-resolution pages and relevance maps).
    """

    trajectory: Trajectory
    folder: Path | None = None
    index_folder: Path | None = None

    def view_jpeg(self, view: ImageView) -> bytes | None:
        """The exact JPEG bytes the model saw for `view`."""
        data = self.trajectory.images.get(view.file)
        if data is None and self.folder is not None:
            path = self.folder / view.file
            if path.is_file():
                data = path.read_bytes()
        return data

    def page_picture(self, view: ImageView) -> tuple[Image.Image, list[float]] | None:
        """A picture of `view`'s whole page and the page region it covers; falls back to the view itself."""
        page = display_image(view.page_image_file)
        if page is not None:
            image, (w, h) = page
            return image, [0.0, 0.0, float(w), float(h)]
        jpeg = self.view_jpeg(view)
        if jpeg is None:
            return None
        return Image.open(io.BytesIO(jpeg)), list(view.region)


# --- cached pictures ----------------------------------------------------------------------------


@st.cache_data(max_entries=512, show_spinner=False)
def _display_image(path: str, mtime: float, max_side: int) -> tuple[Image.Image, tuple[int, int]] | None:
    try:
        image = Image.open(path)
        size = image.size
        image.draft("RGB", (max_side, max_side))  # JPEG: decode at a reduced scale, much faster
        image = image.convert("RGB")
        image.thumbnail((max_side, max_side))
        return image, size
    except (OSError, ValueError) as e:  # unreadable or not an image: the caller falls back
        log.warning("cannot read page image %s: %s", path, e)
        return None


def display_image(path: str, max_side: int = ROW_FIGURE_MAX_SIDE) -> tuple[Image.Image, tuple[int, int]] | None:
    """(downscaled image, full (w, h)) of a page image file on this machine, or None if it is not here."""
    try:
        mtime = os.stat(path).st_mtime
    except (OSError, ValueError, TypeError):
        return None
    return _display_image(path, mtime, max_side)


def thumbnail(path: str, marked: bool, side: int = 220) -> Image.Image | None:
    found = display_image(path, side)
    if found is None:
        return None
    image = found[0]
    if marked:
        image = ImageOps.expand(image, border=max(3, side // 40), fill=SHOWN_COLOUR)
    return image


@st.cache_data(max_entries=256, show_spinner=False)
def _relevance(index_folder: str, page_id: str, query: str):
    """(values, extent, peak) of the retrieval relevance map of `query` over a page of the index."""
    from search_engine.relevance import relevance_map

    index = common.open_index(Path(index_folder))
    page = index.page(page_id)
    result = relevance_map(query, page, common.box_cache(index_folder))
    return result.values, result.extent, result.peak


def relevance(index_folder: Path | None, page_id: str, query: str):
    """The relevance map, or None with a logged reason (index gone, page not in it)."""
    if index_folder is None or not common.is_index_folder(Path(index_folder)):
        return None
    try:
        return _relevance(str(index_folder), page_id, query)
    except KeyError:
        return None  # a page this index does not have (the run searched elsewhere)


# --- the row -----------------------------------------------------------------------------------


def question_header(traj: Trajectory, caption: str) -> None:
    """The question of a run, a caption under it, and (offline policy) a warning that no model reasoned."""
    st.divider()
    st.subheader("Question")
    st.text(traj.question)
    st.caption(common.md_escape(caption))
    if traj.policy.get("name") == "offline":
        st.warning("Offline policy: no model was reasoning; the thoughts are written by rules, not by a model.", icon=":material/smart_toy:")


def header_row() -> None:
    for column, title in zip(st.columns(COLUMNS), HEADERS):
        column.caption(title)


def render_turn(turn: Turn, source: TurnSource, key: str) -> None:
    """Draw `turn` as one row of five columns. `key` makes its widgets unique on the page."""
    thought, results, page, crop, heat = st.columns(COLUMNS, border=True)
    with thought:
        _thought_and_action(turn)
    with results:
        _search_results(turn)
    with page:
        _page_acted_on(turn, source, key)
    with crop:
        _zoomed_crop(turn, source, key)
    with heat:
        _heatmap(turn, source, key)


def _thought_and_action(turn: Turn) -> None:
    st.markdown(f"**Turn {turn.index + 1}** · {turn.action}")
    if turn.thought:
        st.caption("Thought")
        st.text(turn.thought)
    if turn.action == "invalid":
        st.error(f"Invalid reply: {common.md_escape(turn.error or 'unknown problem')}", icon=":material/warning:")
    else:
        st.code(action_text(turn), language=None, wrap_lines=True)
    if turn.feedback:
        st.caption("Told the model")
        st.text(turn.feedback)
    costs = [f"model {turn.model_seconds:.1f} s", f"tools {turn.tool_seconds:.2f} s"]
    if turn.prompt_tokens is not None:
        costs.append(f"{turn.prompt_tokens} + {turn.completion_tokens} tokens")
    st.caption(" · ".join(costs))
    with st.expander("Raw reply"):
        st.code(turn.raw_text or "(empty)", language=None, wrap_lines=True)


def action_text(turn: Turn) -> str:
    if turn.action == "bbox" and turn.bbox_model is not None:
        return "<bbox>[" + ", ".join(f"{v:g}" for v in turn.bbox_model) + "]</bbox>"
    return f"<{turn.action}>{turn.argument}</{turn.action}>"


def _search_results(turn: Turn) -> None:
    if turn.action != "search":
        st.caption("No search in this turn.")
        return
    if not turn.hits:
        st.caption("The search found nothing.")
        return
    shown = turn.shown_page_id
    images, captions = [], []
    for hit in turn.hits[:THUMBNAILS]:
        marked = hit["page_id"] == shown
        picture = thumbnail(hit["image_file"], marked)
        label = f"{'▶ shown · ' if marked else ''}#{hit['rank']} {hit['page_id']} · {hit['score']:.3f}"
        if picture is None:
            st.caption(common.md_escape(label + " (image not on this machine)"))
        else:
            images.append(picture)
            captions.append(label)
    if images:
        for start in range(0, len(images), 2):
            for column, picture, caption in zip(st.columns(2), images[start : start + 2], captions[start : start + 2]):
                column.image(picture, caption=caption, width="stretch")
    if shown is None:
        st.caption("Every page found was shown before; the model saw no new page.")
    elif all(h["page_id"] != shown for h in turn.hits[:THUMBNAILS]):
        st.caption(common.md_escape(f"▶ shown: {shown}"))
    if len(turn.hits) > THUMBNAILS:
        with st.expander(f"All {len(turn.hits)} hits"):
            st.dataframe(
                [{"rank": h["rank"], "page": h["page_id"], "score": round(h["score"], 4), "shown": h["page_id"] == shown} for h in turn.hits],
                hide_index=True,
            )


def _figure(key: str, figure) -> None:
    """A figure sized for a row cell: as tall as the page's aspect needs at the cell's width, no tick
    labels or colour bar (hovering still reads page coordinates and scores), the mode bar on hover."""
    x0, x1 = figure.layout.xaxis.range
    y1, y0 = figure.layout.yaxis.range
    height = int(min(ROW_FIGURE_MAX_HEIGHT, max(ROW_FIGURE_MIN_HEIGHT, ROW_CELL_WIDTH * (y1 - y0) / (x1 - x0))))
    figure.update_layout(height=height, margin=dict(l=0, r=0, t=0, b=0))
    frame = dict(showticklabels=False, ticks="", showline=True, mirror=True, linecolor="#c8c8c8")  # outline white pages
    figure.update_xaxes(**frame)
    figure.update_yaxes(**frame)
    figure.update_traces(showscale=False, selector=dict(type="heatmap"))
    st.plotly_chart(figure, key=key, config={"displaylogo": False})


def _page_acted_on(turn: Turn, source: TurnSource, key: str) -> None:
    from agent.figures import page_figure

    if turn.action == "bbox" and turn.acted_on is not None:
        view = turn.acted_on
        picture = source.page_picture(view)
        if picture is None:
            st.caption("The page image is missing.")
            return
        image, region = picture
        boxes = [(turn.bbox_page, "crop", CROP_COLOUR)]
        if turn.bbox_model is not None:
            boxes.append((view.model_to_page(turn.bbox_model), "bbox", BBOX_COLOUR))
        if list(view.region) != region:  # a crop of a crop: outline the crop it acted on
            boxes.insert(0, (view.region, "previous crop", PARENT_COLOUR))
        _figure(f"{key}-page", page_figure(image, region=region, boxes=boxes, max_side=ROW_FIGURE_MAX_SIDE))
        st.caption(common.md_escape(f"{view.page_id}: crop {_box_text(turn.bbox_page)} (page pixels, 56 px padding)"))
    elif turn.action == "search" and turn.observation is not None:
        picture = source.page_picture(turn.observation)
        if picture is None:
            st.caption("The page image is missing.")
            return
        image, region = picture
        _figure(f"{key}-page", page_figure(image, region=region, max_side=ROW_FIGURE_MAX_SIDE))
        st.caption(common.md_escape(f"{turn.observation.page_id}, shown to the model at {turn.observation.input_size[0]}x{turn.observation.input_size[1]}"))
    else:
        st.caption("No page in this turn.")


def _zoomed_crop(turn: Turn, source: TurnSource, key: str) -> None:
    from agent.figures import crop_figure

    if turn.action != "bbox" or turn.observation is None:
        st.caption("No crop in this turn.")
        return
    jpeg = source.view_jpeg(turn.observation)
    if jpeg is None:
        st.caption("The crop image is missing.")
        return
    view = turn.observation
    figure = crop_figure(Image.open(io.BytesIO(jpeg)), region=view.region, max_side=ROW_FIGURE_MAX_SIDE)
    _figure(f"{key}-crop", figure)
    st.caption(f"what the model saw: {view.input_size[0]}x{view.input_size[1]} px")


def _box_text(box) -> str:
    return "[" + ", ".join(f"{v:.0f}" for v in box) + "]"


def heat_query(turn: Turn, trajectory: Trajectory) -> str:
    """The query a turn's relevance map scores: the latest search up to this turn, else the question."""
    for earlier in reversed(trajectory.turns[: turn.index + 1]):
        if earlier.action == "search" and earlier.argument.strip():
            return earlier.argument
    return trajectory.question


def heat_view(turn: Turn, trajectory: Trajectory) -> ImageView | None:
    """The page a turn's heatmap is drawn on: the page it showed or acted on, else the last one seen."""
    if turn.action == "bbox" and turn.acted_on is not None:
        return turn.acted_on
    if turn.observation is not None:
        return turn.observation
    for earlier in reversed(trajectory.turns[: turn.index]):
        if earlier.observation is not None:
            return earlier.observation
    return None


def _heatmap(turn: Turn, source: TurnSource, key: str) -> None:
    kinds = heat_kinds(turn, source)
    if not kinds:
        st.caption("No page seen yet.")
        return
    _heatmap_cell(turn, source, key, kinds)


@st.fragment
def _heatmap_cell(turn: Turn, source: TurnSource, key: str, kinds: dict[str, Callable[[], "HeatMap"]]) -> None:
    """A fragment: moving the opacity slider redraws this cell only, not the whole page. (A fragment
    rerun bypasses app.py's guard, so it keeps its own.)"""
    try:
        _draw_heatmap(turn, source, key, kinds)
    except Exception as e:
        common.report_unexpected(e)


def _draw_heatmap(turn: Turn, source: TurnSource, key: str, kinds: dict[str, Callable[[], "HeatMap"]]) -> None:
    from agent.figures import page_figure

    names = list(kinds)
    kind = names[0]
    if len(names) > 1:
        kind = st.selectbox("Map", names, key=f"{key}-heatkind", label_visibility="collapsed") or names[0]
    opacity = st.slider("Opacity", 0.0, 1.0, 0.5, 0.05, key=f"{key}-opacity")
    heat = kinds[kind]()
    picture = source.page_picture(heat.view)
    if picture is None:
        st.caption("The page image is missing.")
        return
    image, region = picture
    boxes = [(turn.bbox_page, "crop", CROP_COLOUR)] if turn.action == "bbox" and turn.bbox_page and turn.acted_on and turn.acted_on.page_id == heat.view.page_id else []
    if heat.values is None:
        figure = page_figure(image, region=region, boxes=boxes, max_side=ROW_FIGURE_MAX_SIDE)
    else:
        figure = page_figure(
            image, region=region, heatmap=heat.values, heatmap_extent=heat.extent, boxes=boxes, opacity=opacity,
            heatmap_name=heat.name, max_side=ROW_FIGURE_MAX_SIDE,
        )
    st.caption(common.md_escape(heat.note))
    _figure(f"{key}-heat", figure)


@dataclass
class HeatMap:
    view: ImageView  # the image whose page the map is drawn over
    values: object  # 2-D array in [0, 1], or None when no map is available (note says why)
    extent: tuple[float, float, float, float] | None
    name: str
    note: str


def heat_kinds(turn: Turn, source: TurnSource) -> dict[str, Callable[[], HeatMap]]:
    """The maps this turn can show, by label: retrieval relevance on its page, and the model's
    attention on each image in context where the trajectory stores it (agent/attention.py)."""
    view = heat_view(turn, source.trajectory)
    kinds: dict[str, Callable[[], HeatMap]] = {}
    if view is not None:
        query = heat_query(turn, source.trajectory)

        def retrieval() -> HeatMap:
            found = relevance(source.index_folder, view.page_id, query)
            if found is None:
                return HeatMap(view, None, None, "relevance", "No relevance map: the index this run searched is not on this machine.")
            values, extent, peak = found
            return HeatMap(view, values, extent, "relevance", f"retrieval relevance of “{query[:60]}” (best box {peak:.2f})")

        kinds["retrieval relevance"] = retrieval
    if source.folder is not None and any(k.startswith("attention:") for k in turn.maps):
        from agent.attention import load_attention_maps

        maps = sorted(load_attention_maps(source.folder, source.trajectory, turn.index), key=lambda m: m.view.file != getattr(view, "file", None))
        shares = {k: v for k, v in turn.scores.items() if k.startswith("attention_")}
        for m in maps:
            label = f"model attention on {m.view.file}"

            def attention(m=m) -> HeatMap:
                peak = float(m.values.max()) if m.values.size else 0.0
                values = m.values / peak if peak > 0 else m.values
                extra = ", ".join(f"{k.removeprefix('attention_').replace('_', ' ')} {v:.2f}" for k, v in shares.items())
                return HeatMap(m.view, values, m.extent, "attention", f"model attention over {m.view.page_id} (mass {float(m.values.sum()):.3f}{'; ' + extra if extra else ''})")

            kinds[label] = attention
    return kinds


def render_turn_compact(turn: Turn, source: TurnSource, key: str) -> None:
    """A turn in one narrow column (for comparing two trajectories side by side)."""
    from agent.figures import crop_figure, page_figure

    st.markdown(f"**Turn {turn.index + 1}** · {turn.action}")
    if turn.thought:
        st.text(turn.thought)
    if turn.action == "invalid":
        st.error(f"Invalid reply: {common.md_escape(turn.error or 'unknown problem')}")
    else:
        st.code(action_text(turn), language=None, wrap_lines=True)
    if turn.action == "search" and turn.hits:
        st.caption(common.md_escape("hits: " + ", ".join(f"{h['page_id']} ({h['score']:.2f})" for h in turn.hits[:5]) + f"; shown: {turn.shown_page_id}"))
    view = turn.observation
    if view is None:
        return
    if turn.action == "bbox":
        jpeg = source.view_jpeg(view)
        if jpeg is not None:
            _figure(f"{key}-crop", crop_figure(Image.open(io.BytesIO(jpeg)), region=view.region, max_side=ROW_FIGURE_MAX_SIDE))
    else:
        picture = source.page_picture(view)
        if picture is not None:
            _figure(f"{key}-page", page_figure(picture[0], region=picture[1], max_side=ROW_FIGURE_MAX_SIDE))
