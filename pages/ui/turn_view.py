"""The turn view: one trajectory's turns, the picture first. Used live by Ask and in replay by Trajectories.

Three modes over the same record:
- Turn: a filmstrip of every turn to jump between them; for the selected turn, the image it acted
  on or read from, large, as one zoomable figure with switchable layers (the model's bbox, the
  padded crop, the retrieval relevance map, the model's attention when computed), the thought and
  the action beside it, the zoomed crop under it at its real size, and the search hits as a strip
  of thumbnails with what their score means;
- Overview: every turn as a card in a dense grid, to scan a long trajectory;
- Graph: the episode as a graph (agent/episode_graph.py); a click on a node opens its turn.

The view runs as a fragment, so a turn change or a layer switch redraws it alone, never the page
around it; pictures come decoded and encoded from pages/ui/pictures.py's caches. Model text is
always drawn with `st.text` or escaped, never as markdown or HTML (st.text, not st.code: the code
highlighter is a 1.5 MB script a fresh browser would load first).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from agent.figures import MODEBAR_CONFIG, HeatLayer, figure_height, graph_figure, layered_figure
from agent.trajectory import Turn
from pages import common
from pages.ui import pictures, scene as scenes
from pages.ui.pictures import TurnSource
from pages.ui.scene import BBOX, CROP, GOLD, PREVIOUS

RELEVANCE, ATTENTION = "relevance", "attention"
LAYERS = [BBOX, CROP, PREVIOUS, GOLD, RELEVANCE, ATTENTION]
LAYER_HELP = (
    "What is drawn on the picture. The model's bbox is the box it wrote, mapped to the page; the padded crop is the "
    "region actually cut (56 px added on each side); 'image acted on' outlines an earlier crop a crop was taken from; "
    "reference evidence is the question set's gold box. Relevance scores the page's text boxes against the query "
    "with the index's embedder (loaded the first time you switch it on); for an index with a visual late-interaction "
    "retriever (ColQwen2) it is the similarity map of the query, or of one query token, over the page's patches. "
    "Attention is where the model looked, once computed on this page's attention panel. Click a legend entry on the figure to hide it for a moment."
)
DEFAULT_LAYERS = [BBOX, CROP, PREVIOUS, GOLD]
MODES = ["Turn", "Overview", "Graph"]
MAIN_SHARE = 0.75  # the picture's column: 75% of the content width, the thought and action beside it
# The figure's height is set on the server, which does not know the window: it is sized so that the
# picture fills its column in a 1440 px window (1280 px of content). Narrower, the picture keeps the
# column's width (a little blank below); wider, it keeps that height: at 1600 px it is still over 60%
# of the content width (tests/browser/test_browser.py measures both ends).
DESIGN_CONTENT_PX = 1280
STRIP_THUMB_PX, STRIP_THUMB_HEIGHT = 88, 66
HIT_THUMB_PX = 168
CARD_PX = 262


@dataclass
class Live:
    """A run in progress: the view follows its newest turn and shows the one being produced."""

    running: bool
    waiting: str  # "turn 4: waiting for the model server"


def plot_width(share: float = MAIN_SHARE) -> int:
    return int((DESIGN_CONTENT_PX - 16) * share) - 40  # minus the column gap and the figure's margins


# --- the view ----------------------------------------------------------------------------------


def show(source: TurnSource, *, key: str, live: Live | None = None, initial_turn: int | None = None, link_turn: bool = False) -> None:
    """Draw the trajectory's turn view (as a fragment). `key` makes its widgets unique on the page.

    `live`: the run is in progress (follow its newest turn). `initial_turn` (0-based), e.g. from a
    link's ?turn=, opens that turn the first time; `link_turn` keeps ?turn= in the address bar in
    step with the turn shown.
    """
    state = f"{key}-turn"
    if initial_turn is not None and state not in st.session_state:
        st.session_state[state] = initial_turn
    ensure_layers()
    _view(source, key, live, link_turn)


def ensure_layers() -> None:
    """The session's choice of layers (kept across turns and pages), the default the first time."""
    if "turn_layers" not in st.session_state:
        st.session_state["turn_layers"] = list(DEFAULT_LAYERS)


def layer_pills() -> list[str]:
    """The layer switch (one choice per session, kept across pages and turns)."""
    ensure_layers()
    return st.pills("Layers", LAYERS, selection_mode="multi", key="turn_layers", help=LAYER_HELP,
                    label_visibility="collapsed", persist_state="session") or []


def layer_controls() -> tuple[list[str], float]:
    """The layer switch and the maps' opacity, on one row."""
    row = st.columns([6, 1], vertical_alignment="center")
    with row[0]:
        chosen = layer_pills()
    opacity = row[1].slider("Map opacity", 0.1, 1.0, 0.55, 0.05, key="turn_opacity", label_visibility="collapsed",
                            disabled=not ({RELEVANCE, ATTENTION} & set(chosen)), help="Opacity of the heatmaps")
    return chosen, opacity


@st.fragment
def _view(source: TurnSource, key: str, live: Live | None, link_turn: bool) -> None:
    try:
        _draw(source, key, live, link_turn)
    except Exception as e:  # a fragment rerun bypasses app.py's guard: keep one here
        common.report_unexpected(e)


def _select(key: str, index: int, mode: str | None = None, follow: bool | None = None) -> None:
    """A filmstrip, card or graph click: UI state only (which turn, which mode)."""
    st.session_state[f"{key}-turn"] = index
    if mode is not None:
        st.session_state[f"{key}-mode"] = mode
    if follow is not None:
        st.session_state[f"{key}-follow"] = follow


def _draw(source: TurnSource, key: str, live: Live | None, link_turn: bool) -> None:
    turns = list(source.trajectory.turns)  # a snapshot: a live run appends in its own thread
    if not turns:
        if live is not None and live.running:
            st.info(f"No turn yet: {live.waiting}.", icon=":material/hourglass_top:")
        else:
            st.info("This run has no turns.")
        return
    last = len(turns) - 1
    follow = live is not None and st.session_state.get(f"{key}-follow", True)
    chosen = st.session_state.get(f"{key}-turn")
    if chosen is None:
        chosen = last if live is not None else 0  # live: the newest turn; replay: the first
    index = last if follow else min(max(0, int(chosen)), last)
    st.session_state[f"{key}-turn"] = index
    if link_turn and st.query_params.get("turn") != str(index + 1):
        st.query_params["turn"] = str(index + 1)

    bar = st.columns([4, 1, 1, 3], vertical_alignment="center")
    mode = bar[0].segmented_control("View", MODES, default="Turn", required=True, key=f"{key}-mode", label_visibility="collapsed")
    bar[1].button("Previous", key=f"{key}-prev", icon=":material/chevron_left:", disabled=index == 0, width="stretch",
                  on_click=_select, args=(key, index - 1), kwargs={"follow": False})
    bar[2].button("Next", key=f"{key}-next", icon=":material/chevron_right:", disabled=index == last, width="stretch",
                  on_click=_select, args=(key, index + 1), kwargs={"follow": live is not None and index + 1 == last})
    where = f"Turn {index + 1} of {len(turns)}"
    if live is not None and live.running:
        where += " · following the run" if follow else " · the run goes on"
    bar[3].markdown(f"**{where}**")

    if mode == "Overview":
        overview(source, turns, key)
        return
    if mode == "Graph":
        graph(source, key, index)
        return
    filmstrip(source, turns, key, index, live)
    turn_detail(source, turns[index], key)


# --- filmstrip, overview, graph -------------------------------------------------------------------


def turn_thumbnail(source: TurnSource, turn: Turn, width: int, height: int | None = None) -> bytes | None:
    """A thumbnail of the image a turn acted on or read from, its crop outlined."""
    sc = scenes.scene(turn, source.trajectory)
    if sc.view is None:
        return None
    outlines = tuple((o.box, o.colour) for o in sc.outlines if o.name == CROP)
    return pictures.view_thumbnail(source, sc.view, width, outlines, sc.whole_page, height)


def filmstrip(source: TurnSource, turns: list[Turn], key: str, index: int, live: Live | None) -> None:
    """Every turn as a small card (its action, its page, the crop outlined); a click opens it."""
    last = len(turns) - 1
    with st.container(horizontal=True, gap="small", key=f"{key}-strip"):
        for turn in turns:
            with st.container(width=STRIP_THUMB_PX + 8, gap=None, key=f"{key}-card-{turn.index}"):
                thumb = turn_thumbnail(source, turn, STRIP_THUMB_PX, STRIP_THUMB_HEIGHT)
                if thumb is None:  # no image yet (an answer before any search): a blank card of the same size
                    thumb = pictures.blank(STRIP_THUMB_PX, STRIP_THUMB_HEIGHT)
                st.image(thumb, width=STRIP_THUMB_PX)
                st.button(f"{turn.index + 1} · {turn.action}", key=f"{key}-go-{turn.index}", width="stretch",
                          type="primary" if turn.index == index else "secondary",
                          on_click=_select, args=(key, turn.index), kwargs={"follow": live is not None and turn.index == last})
        if live is not None and live.running:
            with st.container(width=STRIP_THUMB_PX + 8, gap=None):
                st.caption(f"Turn {len(turns) + 1}: {live.waiting.split(': ', 1)[-1]}…")


def overview(source: TurnSource, turns: list[Turn], key: str) -> None:
    """Every turn as a card in a grid: picture, action, thought; for scanning long trajectories."""
    with st.container(horizontal=True, gap="small", key=f"{key}-overview"):
        for turn in turns:
            with st.container(width=CARD_PX, border=True, gap="small"):
                st.markdown(f"**Turn {turn.index + 1}** · {turn.action}")
                thumb = turn_thumbnail(source, turn, CARD_PX - 30)
                if thumb is not None:
                    st.image(thumb, width="stretch")
                verbatim(scenes.action_text(turn), f"{key}-card-action-{turn.index}")
                if turn.thought:
                    st.caption(common.md_escape(turn.thought[:160] + ("…" if len(turn.thought) > 160 else "")))
                st.button(f"Open turn {turn.index + 1}", key=f"{key}-open-{turn.index}", width="stretch",
                          on_click=_select, args=(key, turn.index, "Turn", False))


def graph(source: TurnSource, key: str, index: int) -> None:
    """The episode graph; clicking a node opens its turn."""
    from agent.episode_graph import episode_graph

    figure, turns_of = graph_figure(episode_graph(source.trajectory), index)
    chart = f"{key}-graph"
    st.caption("Each query, the pages it brought, the crops taken from each, and the answer (VimRAG's memory graph). "
               "Click a node to open its turn.")
    st.plotly_chart(figure, key=chart, on_select=lambda: _graph_clicked(key, chart, turns_of), selection_mode="points",
                    config={"displayModeBar": False})


def _graph_clicked(key: str, chart: str, turns_of: list[list[int]]) -> None:
    """on_select of the graph: open the turn of the node clicked (UI state only)."""
    points = ((st.session_state.get(chart) or {}).get("selection") or {}).get("points") or []
    for point in points:
        curve, at = point.get("curve_number"), point.get("point_index", point.get("point_number"))
        if curve is not None and at is not None and curve < len(turns_of) and at < len(turns_of[curve]):
            _select(key, turns_of[curve][at], "Turn", False)
            return


# --- one turn ------------------------------------------------------------------------------------


def turn_detail(source: TurnSource, turn: Turn, key: str) -> None:
    layer_controls()
    picture_col, text_col = st.columns([MAIN_SHARE, 1 - MAIN_SHARE], gap="medium")
    with picture_col:
        picture(source, turn, key)
    with text_col:
        turn_text(turn)
    zoomed_crop(source, turn)
    search_hits(source, turn)


def turn_text(turn: Turn, large: bool = False) -> None:
    """The model's thought and action, verbatim, and what the loop told the model back."""
    with st.container(key=f"turn-text-{'large' if large else 'normal'}-{turn.index}"):
        st.markdown(f"### Turn {turn.index + 1} · {turn.action}" if large else f"**Turn {turn.index + 1}** · {turn.action}")
        if turn.thought:
            st.caption("Thought")
            st.text(turn.thought)
        if turn.action == "invalid":
            st.error(f"Invalid reply: {common.md_escape(turn.error or 'unknown problem')}", icon=":material/warning:")
        else:
            st.caption("Action")
            verbatim(scenes.action_text(turn), f"action-{'large' if large else 'normal'}-{turn.index}")
        if turn.feedback:
            st.caption("Told the model")
            st.text(turn.feedback)
        if not large:
            costs = [f"model {turn.model_seconds:.1f} s", f"tools {turn.tool_seconds:.2f} s"]
            if turn.prompt_tokens is not None:
                costs.append(f"{turn.prompt_tokens} + {turn.completion_tokens} tokens")
            st.caption(" · ".join(costs))
            with st.expander("Raw reply"):
                verbatim(turn.raw_text or "(empty)", f"raw-{turn.index}")


def verbatim(text: str, key: str) -> None:
    """Model text as it was written, in a monospace box (st.text: never parsed as markdown or HTML)."""
    with st.container(key=f"verbatim-{key}"):
        st.text(text)


def _attention_choice(source: TurnSource, turn: Turn, sc: scenes.Scene, key: str):
    """The attention map to draw and the view it covers: the map over the scene's image by default;
    where the turn has maps over several images in context, the user picks one by turn and image."""
    maps = pictures.attention_maps(source, turn.index)
    if not maps:
        return None, sc.view
    names = [f"turn {turn.index + 1} · {scenes.image_name(m.view, source.trajectory)}" for m in maps]  # one per image
    default = next((i for i, m in enumerate(maps) if sc.view is not None and m.view.file == sc.view.file), len(maps) - 1)
    chosen = default
    if len(maps) > 1:
        name = st.selectbox("Attention over", names, index=default, key=f"{key}-attn-{turn.index}",
                            help="Which image in the model's context the attention map covers.")
        chosen = names.index(name) if name in names else default
    return maps[chosen], maps[chosen].view


def picture(source: TurnSource, turn: Turn, key: str, share: float = MAIN_SHARE) -> None:
    """The image the turn acted on or read from, large, with the session's layers (module docstring;
    the page draws their switch, `layer_controls` or `layer_pills`)."""
    sc = scenes.scene(turn, source.trajectory)
    ensure_layers()
    chosen, opacity = list(st.session_state.get("turn_layers") or []), float(st.session_state.get("turn_opacity", 0.55))
    attention, view = _attention_choice(source, turn, sc, key) if ATTENTION in chosen else (None, sc.view)
    if view is None:
        st.info(sc.note)
        return
    whole_page = sc.whole_page if view is sc.view else False
    drawn = pictures.picture(source, view, whole_page)
    if drawn is None:
        st.warning(f"The image of {scenes.image_name(view, source.trajectory)} is missing from this trajectory and from the index.")
        return
    encoded, region, origin = drawn
    heat, notes = [], []
    if RELEVANCE in chosen and pictures.visual_index(source.index_folder):
        _similarity_layer(source, turn, view, sc.relevance_query, key, heat, notes)
    elif RELEVANCE in chosen:
        with st.spinner("Scoring the page's text against the query (the first map loads the index's embedder)…"):
            found = pictures.relevance(source.index_folder, view.page_id, sc.relevance_query)
        if found is None:
            notes.append("no relevance map: the index this run searched is not on this machine")
        else:
            values, extent, peak = found
            heat.append(HeatLayer(values, extent, "retrieval relevance", "heat"))
            notes.append(f"relevance of “{sc.relevance_query[:60]}” (best text box {peak:.2f})")
    if ATTENTION in chosen:
        if attention is None:
            notes.append("no attention map for this turn (compute them in the attention panel)")
        else:
            peak = float(attention.values.max()) if attention.values.size else 0.0
            heat.append(HeatLayer(attention.values / peak if peak > 0 else attention.values, attention.extent, "model attention", "attention"))
            notes.append(f"model attention of turn {turn.index + 1} over the {scenes.image_name(view, source.trajectory)} "
                         f"(scaled to its peak; mass {float(attention.values.sum()):.3f})")
    outlines = [(o.box, o.name, o.colour, o.dash, o.fill) for o in sc.outlines if o.name in chosen and view is sc.view]
    height = figure_height(region, plot_width(share), len(heat))
    figure = layered_figure(encoded, region=region, heatmaps=heat, outlines=outlines, opacity=opacity, height=height,
                            uirevision=f"{source.trajectory.id}-{turn.index}-{view.file}")
    st.plotly_chart(figure, key=f"{key}-picture", config=MODEBAR_CONFIG)
    name = scenes.image_name(view, source.trajectory)
    role = sc.role if view is sc.view else "model attention over"
    st.caption(common.md_escape(f"Turn {turn.index + 1} · {role}: {name} · drawn from {origin}" + "".join(f" · {n}" for n in notes)))


WHOLE_QUERY = "whole query"


def _similarity_layer(source: TurnSource, turn: Turn, view, query: str, key: str, heat: list, notes: list) -> None:
    """The visual similarity map of a late-interaction index (search_engine/similarity_maps.py) as the
    relevance layer, with a picker: the whole query, or one query token."""
    with st.spinner("Embedding the query and the page with the index's visual retriever (the first map loads it)…"):
        found = pictures.similarities(source.index_folder, view.page_id, query)
    if found is None:
        notes.append("no similarity map: the index this run searched is not on this machine")
        return
    from search_engine.similarity_maps import similarity_map

    sims, (width, height) = found
    labels = [WHOLE_QUERY] + [f"{i + 1}: {t!r}" for i, t in enumerate(sims.tokens)]
    picked = st.selectbox("Similarity of", labels, key=f"{key}-simtoken-{turn.index}",
                          help="The whole query (the mean over its tokens), or one query token: where on the page it "
                               "matched best (its dot product with each patch's vector).")
    token = None if picked == WHOLE_QUERY or picked not in labels else labels.index(picked) - 1
    drawn = similarity_map(sims.sims, width, height, token)
    heat.append(HeatLayer(drawn.values, drawn.extent, "visual similarity", "heat"))
    what = f"token {picked}" if token is not None else f"“{query[:60]}”"
    notes.append(f"visual similarity of {what} ({sims.grid[0]}x{sims.grid[1]} patches; MaxSim {sims.score:.2f}, "
                 f"best patch {drawn.peak:.2f})")


def zoomed_crop(source: TurnSource, turn: Turn) -> None:
    """What a bbox turn showed the model next, at its real size up to the width available."""
    if turn.action != "bbox" or turn.observation is None:
        return
    jpeg = source.view_jpeg(turn.observation)
    view = turn.observation
    st.markdown("**Zoomed crop**, what the model saw next")
    if jpeg is None:
        st.warning("The crop image is missing from this trajectory.")
        return
    st.image(jpeg, width=int(view.input_size[0]))
    st.caption(common.md_escape(f"Crop of page {view.page_id}, region {_box_text(view.region)} (page pixels), "
                                f"sent to the model at {view.input_size[0]}x{view.input_size[1]} px, drawn at that size when it fits"))


def _box_text(box) -> str:
    return "[" + ", ".join(f"{v:.0f}" for v in box) + "]"


def fusion_settings(index_folder: Path | None) -> dict | None:
    """The index's fusion settings (its config.json), to say what a hit's score means."""
    if index_folder is None:
        return None
    try:
        return json.loads((Path(index_folder) / "config.json").read_text(encoding="utf-8")).get("fusion")
    except (OSError, ValueError, AttributeError):
        return None


def search_hits(source: TurnSource, turn: Turn, width: int = HIT_THUMB_PX) -> None:
    """The search results as a strip of thumbnails, the page shown to the model marked."""
    if turn.action != "search":
        return
    if not turn.hits:
        st.caption("The search found nothing.")
        return
    shown = turn.shown_page_id
    st.markdown(f"**Search results** for “{common.md_escape(turn.argument[:80])}”: {len(turn.hits)} hits, "
                + ("the first one not shown before went to the model (green)." if shown else "all were shown before; no new page."),
                help=scenes.fusion_note(fusion_settings(source.index_folder)))
    st.html(hits_html(source, turn, width))
    with st.expander(f"All {len(turn.hits)} hits with each retriever's own score"):
        st.table([{"rank": h["rank"], "page": h["page_id"], "fused score": f"{h['score']:.3f}",
                   **{name: f"{v:.3f}" for name, v in (h.get("scores") or {}).items()}, "shown": "▶" if h["page_id"] == shown else ""}
                  for h in turn.hits], hide_index=True)


def hits_html(source: pictures.TurnSource, turn: Turn, width: int) -> str:
    """The strip of hit thumbnails as one HTML block (one element for the browser to draw, not thirty).
    Every text is escaped; a caption's tooltip gives the full page id and each retriever's score."""
    import base64
    import html

    cards = []
    for hit in turn.hits:
        marked = hit["page_id"] == turn.shown_page_id
        page_file = source.page_file(hit["page_id"])
        thumb = pictures.page_thumbnail(page_file, width, marked=marked) if page_file else None
        image = (f'<img src="data:image/jpeg;base64,{base64.b64encode(thumb).decode()}" width="{width}" alt="{html.escape(hit["page_id"])}">'
                 if thumb is not None else f'<div class="vrag-missing" style="width:{width}px">image not on this machine</div>')
        scores = ", ".join(f"{name} {v:.3f}" for name, v in (hit.get("scores") or {}).items())
        tip = html.escape(f"{hit['page_id']} · rank {hit['rank']} · fused score {hit['score']:.3f}" + (f" ({scores})" if scores else ""))
        caption = html.escape(f"{'▶ ' if marked else ''}#{hit['rank']} {scenes.short_id(hit['page_id'])} · {hit['score']:.2f}")
        cards.append(f'<figure class="vrag-hit{" vrag-shown" if marked else ""}" style="width:{width}px">{image}'
                     f'<figcaption title="{tip}">{caption}</figcaption></figure>')
    return f'<div class="vrag-hits">{"".join(cards)}</div>'


STYLE = """
<style>
[class*="-strip"] [data-testid="stCaptionContainer"] p {
  white-space: nowrap; overflow: hidden; text-overflow: ellipsis; font-size: 0.8rem; margin: 0;
}
.vrag-hits { display: flex; flex-wrap: wrap; gap: 0.6rem; }
.vrag-hit { margin: 0; }
.vrag-hit img { display: block; border-radius: 2px; }
.vrag-hit figcaption {
  white-space: nowrap; overflow: hidden; text-overflow: ellipsis; font-size: 0.8rem; color: rgba(49, 51, 63, 0.7); margin-top: 0.2rem;
}
.vrag-hit.vrag-shown figcaption { color: #1f7a44; font-weight: 600; }
.vrag-missing { font-size: 0.8rem; color: rgba(49, 51, 63, 0.6); }
[class*="-strip"] button p { font-size: 0.8rem; white-space: nowrap; }
[class*="st-key-verbatim-"] [data-testid="stText"] {
  font-family: "Source Code Pro", monospace; font-size: 0.85rem; background: #f6f6f8; border-radius: 0.4rem;
  padding: 0.6rem 0.8rem; white-space: pre-wrap; overflow-wrap: anywhere;
}
</style>
"""


def style() -> None:
    """The few CSS rules the view needs (one-line captions in the strips); once per page run."""
    st.html(STYLE)
