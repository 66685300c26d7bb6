"""The Trajectories page's "where did the model look" panel: choose, estimate, compute and draw attention maps.

vLLM returns no attention, so the maps come from re-running the finished trajectory through the same
Qwen2.5-VL weights (agent/attention.py): in this process (the local model folder of the Settings
page) or in the attention service (its URL and token there; agent/attention_service.py). The
person chooses where, and what to look at (agent/attention_request.py `MapRequest`): which tokens
of each reply attend (a token group, or one token picked from the reply's tokens), which layers,
one head, every head apart or heads combined, how, and the attention-sink correction. The
estimate says where it will run, how long it should take and how much memory it needs, before it
starts.

Computing runs `agent.attention_client.compute_choice` (Streamlit-free) as a background job keyed
by the trajectory folder (it writes there, so it is shared work; pages/jobs.py), with its progress
drawn while it runs. Every choice is stored apart; the stored ones are listed by their words
("the answer text; all layers; mean of heads") and their maps by turn and image ("turn 3 · crop of
page X (shown in turn 2)"), drawn one at a time with their colour scale.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from agent.attention_client import check_service
from agent.attention_request import TOKEN, MapRequest
from agent.figures import ATTENTION_COLORSCALE, MODEBAR_CONFIG, HeatLayer, figure_height, layered_figure
from agent.trajectory import Trajectory
from pages import common, jobs, status
from pages.ui import pictures, scene

log = logging.getLogger(__name__)

HERE, SERVICE = "in this process", "in the attention service"
SERVE_COMMAND = ("VRAG_ATTENTION_TOKEN=choose-a-token python -m agent serve-attention --model /models/Qwen2.5-VL-7B-VRAG "
                 "--device cuda --dtype bfloat16 --host 0.0.0.0 --port 8003")  # the token from the environment stays out of ps
SELECT_LABELS = {
    "action": "the action's argument (query, box or answer)",
    "bbox": "the box numbers (bbox turns only)",
    "answer": "the answer text (the answer turn only)",
    "search": "the search query (search turns only)",
    "reply": "the whole reply, thinking included",
    TOKEN: "one token of a reply",
}
SINK_LABELS = {
    "none": "no correction",
    "drop": "drop the sink tokens (their share spread over the rest)",
    "baseline": "subtract a per-image baseline",
}
COMBINED, EACH = "combined", "each head apart (a grid)"


@st.cache_data(ttl=10, show_spinner=False)
def service_check(url: str, token: str) -> dict:
    """The attention service's health in words (agent/attention_client.check_service), for a few seconds."""
    return check_service(url, token)


@st.cache_data(ttl=60, show_spinner=False)
def _model_size(model_folder: str) -> tuple[int, int] | None:
    """(layers, heads) of the local model, from its config alone; None when it cannot be read."""
    from agent.attention_cost import ModelShape
    from agent.qwen_model import resolve_model_dir

    try:
        shape = ModelShape.from_model_dir(resolve_model_dir(model_folder), model_folder)
    except Exception as e:  # advice for the controls: never let it break the page
        log.info("cannot read the shape of %s: %s", model_folder, e)
        return None
    return shape.layers, shape.heads


@st.cache_data(ttl=30, show_spinner=False)
def _estimate(folder: str, changed: float, where: str, request: dict, model_folder: str, url: str, token: str) -> str:
    """Where the computation will run, how long it should take and the memory it needs (cached by the
    trajectory file's mtime `changed` and the choice)."""
    from agent.attention_client import AttentionService, estimate_reforward

    trajectory, map_request = Trajectory.load(Path(folder)), MapRequest.from_dict(request)
    try:
        if where == SERVICE:
            service = AttentionService(url, token or None, timeout=10)
            try:
                return service.estimate(trajectory, map_request).summary()
            finally:
                service.close()
        return estimate_reforward(trajectory, model_folder, layers=map_request.layers, turn=map_request.turn).summary()
    except Exception as e:  # an estimate is advice: never let it break the page
        return f"unknown ({e.__class__.__name__}: {e})"


def show(trajectory: Trajectory, folder: Path, source: pictures.TurnSource | None = None) -> None:
    folder = Path(folder)
    # one label whatever is stored: a label that changes would make a new expander, closed again
    with st.expander("Model attention maps", key="attn_open", on_change="rerun", icon=":material/visibility:") as box:
        if not box.open:  # drawn only while open (the estimate reads the model's config)
            return
        computing(trajectory, folder)
        if source is not None:
            st.divider()
            show_stored(source)


# --- choosing and computing --------------------------------------------------------------------


def _where(s: common.Settings) -> tuple[str | None, str | None, tuple[int, int] | None]:
    """(where the maps will be computed, why it cannot be there, (layers, heads) of its model)."""
    here = status.transformers_model(s.transformers_model) if s.transformers_model.strip() else None
    if not s.attention_url.strip() and (here is None or not here["ok"]):
        missing = "" if here is None else " The local model folder set there cannot be used: " + here["detail"]
        return None, ("To compute attention maps, give the same Qwen2.5-VL weights that produced this trajectory on the Settings "
                      "page: a local model folder (maps computed in this process) or the address of an attention service "
                      "running them on a GPU machine." + missing), None
    options = [HERE, SERVICE]
    where = st.radio("Compute the maps", options, index=1 if s.attention_url.strip() else 0, horizontal=True, key="attn_where",
                     help="In this process: the local model folder of the Settings page is loaded here. "
                          "In the attention service: the trajectory is sent to the service at the Settings page's address.")
    if where == SERVICE:
        if not s.attention_url.strip():
            return where, "No attention service is set: give its address (and token) on the Settings page.", None
        check = service_check(s.attention_url, s.attention_token)
        if not check["ok"]:
            return where, f"The attention service cannot be used: {check['detail']}", None
        health = check["health"]
        st.caption(common.md_escape(check["detail"]))
        return where, None, (int(health["layers"]), int(health.get("heads") or 0))
    if here is None:
        return where, "No local model folder is set: give one on the Settings page, or compute in the attention service.", None
    if not here["ok"]:
        return where, f"The local model folder cannot be used: {here['detail']} Fix it on the Settings page.", None
    return where, None, _model_size(s.transformers_model)


def _token_choice(trajectory: Trajectory, folder: Path) -> tuple[int | None, int | None]:
    """(turn, token) picked from the reply tokens an earlier computation stored; (None, None) if none yet."""
    from agent.attention import load_reply_tokens

    tokens = load_reply_tokens(folder)
    turns = [t for t in trajectory.turns if tokens.get(t.index)]
    if not turns:
        st.caption("The tokens of each reply are known once any map of this trajectory has been computed: "
                   "compute another choice first, then pick a token here.")
        return None, None
    left, right = st.columns([1, 3])
    turn = left.selectbox("Turn", [t.index for t in turns], key="attn_token_turn",
                          format_func=lambda i: f"turn {i + 1} · {trajectory.turns[i].action}")
    pieces = tokens[turn]
    token = right.selectbox("Token of the reply", list(range(len(pieces))), key="attn_token",
                            format_func=lambda k: f"{k} · {pieces[k][0]!r}",
                            help="The reply as the model's tokens, in order; the map shows where this one token looked.")
    if token is not None and token >= len(pieces):
        token = None
    return turn, token


def _request(trajectory: Trajectory, folder: Path, size: tuple[int, int] | None) -> MapRequest | None:
    """The map request the controls describe (None when a token is still to be picked)."""
    left, middle, right = st.columns(3)
    select = left.selectbox("Attention from", list(SELECT_LABELS), format_func=SELECT_LABELS.get, key="attn_select",
                            help="Which generated tokens of each reply attend: a token group of every turn, or one token you pick.")
    reduce = middle.selectbox("Combine heads and layers by", ["mean", "max"], key="attn_reduce")
    sink = right.selectbox("Attention sinks", list(SINK_LABELS), format_func=SINK_LABELS.get, key="attn_sink",
                           help="Qwen-VL attention piles up on a few tokens (sinks); the correction is named in the figure.")
    layers, head, per_head = None, None, False
    if size is not None:
        num_layers, num_heads = size
        left, right = st.columns(2)
        if num_layers > 1:
            first, last = left.slider("Layers", 0, num_layers - 1, (0, num_layers - 1), key="attn_layers",
                                      help="Decoder layers, inclusive (0 is nearest the input).")
            layers = None if (first, last) == (0, num_layers - 1) else (int(first), int(last))
        heads = [COMBINED, EACH] + list(range(num_heads))
        chosen = right.selectbox("Heads", heads, key="attn_head",
                                 format_func=lambda h: f"head {h}" if isinstance(h, int) else h,
                                 help="Heads combined (by the choice above), every head apart in a grid, or one head.")
        head = chosen if isinstance(chosen, int) else None
        per_head = chosen == EACH
    turn = token = None
    if select == TOKEN:
        turn, token = _token_choice(trajectory, folder)
        if token is None:
            return None
    try:
        return MapRequest(select=select, turn=turn, token=token, layers=layers, head=head, per_head=per_head, reduce=reduce, sink=sink)
    except ValueError as e:
        st.error(common.md_escape(f"That choice is not possible: {e}"))
        return None


POLL_SECONDS = 0.5
WAIT_SECONDS = 30  # a computation is waited for in place this long; after that the page is drawn and polls it


def _progress_bar(job: jobs.Job, bar=None):
    text = common.md_escape(f"{job.label} ({job.seconds:.0f} s): {job.message or 'starting'}")
    return bar.progress(job.fraction, text=text) if bar is not None else st.progress(job.fraction, text=text)


def _wait(job: jobs.Job, seconds: float) -> None:
    """Draw the computation's progress in place until it ends or `seconds` have passed."""
    bar = _progress_bar(job)
    deadline = time.monotonic() + seconds
    while not job.finished and time.monotonic() < deadline:
        time.sleep(POLL_SECONDS / 2)
        _progress_bar(job, bar)
    bar.empty()


def _progress(job: jobs.Job) -> None:
    """Polled every POLL_SECONDS while a long computation runs (the rest of the page stays usable):
    its stage and share done; the whole page is drawn again when it ends."""
    try:
        if job.finished:
            st.rerun()
        _progress_bar(job)
    except Exception as e:  # a fragment rerun bypasses app.py's guard
        common.report_unexpected(e)


def computing(trajectory: Trajectory, folder: Path) -> None:
    s = common.settings()
    job_key = f"attention:{folder}"
    job = jobs.get_job(job_key)
    if job is not None and not job.finished and job.seconds < WAIT_SECONDS:
        _wait(job, WAIT_SECONDS - job.seconds)
    running = job is not None and not job.finished
    if running:
        st.fragment(_progress, run_every=POLL_SECONDS)(job)
    elif job is not None and job.error:
        st.error(f"The attention maps could not be computed: {common.md_escape(job.error)}")
    elif job is not None and job.result is not None and st.session_state.get("attn_shown_job") != job.started:
        st.session_state["attn_shown_job"] = job.started
        st.session_state["attn_choice"] = job.result.key  # show what was just computed (before its selectbox is drawn)
    where, problem, size = _where(s)
    if where is None:
        st.info(common.md_escape(problem), icon=":material/info:")
        return
    request = _request(trajectory, folder, size)
    if problem:
        st.warning(common.md_escape(problem), icon=":material/warning:")
        return
    if request is None:
        return
    changed = (folder / "trajectory.json").stat().st_mtime if (folder / "trajectory.json").exists() else 0.0
    estimate = _estimate(str(folder), changed, where, request.to_dict(), s.transformers_model, s.attention_url, s.attention_token)
    st.caption(f"Estimated time: {common.md_escape(estimate)}")
    stored = (folder / f"attention-{request.key()}.json").is_file()
    if st.button("Recompute these maps" if stored else "Compute attention maps", key="attn_go", disabled=running,
                 help="One computation per trajectory at a time: this one can start when the one in progress ends." if running else None):
        jobs.start_job(job_key, "Computing attention maps", _work(folder, request, where, s.transformers_model, s.attention_url, s.attention_token),
                       expected=_expected())
        st.rerun()


def _expected() -> tuple[type[BaseException], ...]:
    from agent.attention import AttentionError
    from agent.policies.base import PolicyError

    return (AttentionError, PolicyError, common.UserFacingError, ValueError)


def _work(folder: Path, request: MapRequest, where: str, model_folder: str, url: str, token: str):
    """The background job: a backend for `where`, then agent/attention_client.compute_choice. Runs in
    the job's thread; touches no Streamlit but the shared, cached model."""

    def work(progress: jobs.Progress):
        from agent.attention_client import attention_backend, compute_choice
        from agent.policies.base import PolicyError

        def report(stage: str, fraction: float) -> None:
            progress(round(1000 * fraction), 1000, stage)

        if where == SERVICE:
            backend = attention_backend(service_url=url, token=token)
        else:
            progress(0, 1000, "loading the model")
            backend = attention_backend(model=common.transformers_policy(model_folder).loaded)
        try:
            return compute_choice(folder, backend, request, progress=report)
        except PolicyError as e:  # the page shows what to do in the app, not on a command line
            raise common.UserFacingError(f"{e} {e.app_hint}" if e.app_hint else str(e)) from e
        finally:
            if hasattr(backend, "close"):
                backend.close()

    return work


# --- what is stored ----------------------------------------------------------------------------


def map_name(trajectory: Trajectory, turn: int, view) -> str:
    """A stored map named by the turn whose reply attended and the image it covers."""
    return f"turn {turn + 1} · {scene.image_name(view, trajectory)}"


def choice_name(record: dict) -> str:
    """A stored choice in words: what attended, which layers and heads, and where it was computed."""
    where = record.get("computed_by") or f"{record.get('model', '?')} on {record.get('device', '?')}"
    return f"{record.get('description') or record.get('key')} · {where}"


def show_stored(source: pictures.TurnSource) -> None:
    """Every stored choice, by its words; its maps by turn and image, the chosen one drawn with its colour scale."""
    from agent.attention import load_choice, stored_choices

    folder = source.folder
    records = {r["key"]: r for r in stored_choices(folder)} if folder is not None else {}
    if not records:
        st.caption("No attention maps are stored for this trajectory yet.")
        return
    keys = list(records)
    if st.session_state.get("attn_choice") not in keys:
        st.session_state["attn_choice"] = keys[0]  # the newest
    key = st.selectbox("Stored choice", keys, key="attn_choice", format_func=lambda k: choice_name(records[k]),
                       help="Every choice computed for this trajectory is kept; switching back is a file read.")
    choice = load_choice(folder, source.trajectory, key)
    if choice is None or not choice.maps:
        st.caption("This choice has no maps (no turn had an image in context, or its files are missing).")
        return
    names = [map_name(source.trajectory, m.turn, m.view) for m in choice.maps]
    name = st.selectbox("Stored attention map", names, key="attn_stored",
                        help="Each turn's reply attends over every image in its context; pick one. In the turn view, "
                             "switch on the 'attention' layer to see the current maps over the turn's own picture.")
    chosen_map = choice.maps[names.index(name) if name in names else 0]
    if chosen_map.per_head:
        _head_grid(chosen_map.values, f"{name} · {choice.record.get('description', key)}")
    else:
        _over_picture(source, chosen_map, name, key)
    scores = choice.scores.get(chosen_map.turn) or {}
    if scores:
        st.caption(common.md_escape(_scores_text(scores)))


def _over_picture(source: pictures.TurnSource, chosen_map, name: str, key: str) -> None:
    drawn = pictures.picture(source, chosen_map.view, whole_page=False, max_side=900)
    if drawn is None:
        st.caption(f"The image of {common.md_escape(name)} is missing.")
        return
    encoded, region, _ = drawn
    peak = float(chosen_map.values.max()) if chosen_map.values.size else 0.0
    values = chosen_map.values / peak if peak > 0 else chosen_map.values
    figure = layered_figure(encoded, region=region, heatmaps=[HeatLayer(values, chosen_map.extent, "model attention (share of peak)", "attention")],
                            height=figure_height(region, 640, 1), uirevision=f"attn-{key}-{name}")
    left, _ = st.columns([2, 1])
    with left:
        st.plotly_chart(figure, key="attn_stored_figure", config=MODEBAR_CONFIG)
    st.caption(common.md_escape(f"{name}: the reply's attention mass on this image is {float(chosen_map.values.sum()):.3f}; "
                                "colours are shares of the map's peak"))


def head_grid_figure(values: np.ndarray, columns: int = 4) -> go.Figure:
    """One small map per head (values: heads x rows x cols), on one colour scale: shares of the largest cell of any head."""
    heads, grid_rows, grid_cols = values.shape
    columns = min(columns, heads)
    rows = -(-heads // columns)
    peak = float(values.max()) if values.size else 0.0
    scaled = values / peak if peak > 0 else values
    figure = make_subplots(rows=rows, cols=columns, subplot_titles=[f"head {h}" for h in range(heads)],
                           horizontal_spacing=0.03, vertical_spacing=0.12 / rows)
    for h in range(heads):
        figure.add_trace(go.Heatmap(z=scaled[h], zmin=0.0, zmax=1.0, colorscale=ATTENTION_COLORSCALE, showscale=h == 0,
                                    colorbar={"title": {"text": "share of peak", "side": "right"}, "len": 0.9, "thickness": 14},
                                    name=f"head {h}", hovertemplate=f"head {h}<br>row %{{y}}, col %{{x}}: %{{z:.2f}}<extra></extra>"),
                         row=h // columns + 1, col=h % columns + 1)
        suffix = "" if h == 0 else str(h + 1)  # each map keeps its grid's aspect (row 0 at the top)
        figure.layout[f"yaxis{suffix}"].update(scaleanchor=f"x{suffix}", autorange="reversed", showticklabels=False, constrain="domain")
        figure.layout[f"xaxis{suffix}"].update(showticklabels=False, constrain="domain")
    cell = 900 / columns  # px per map across, roughly: height follows the grid's aspect
    figure.update_layout(height=int(rows * (cell * grid_rows / max(grid_cols, 1) + 40) + 40), margin={"l": 10, "r": 10, "t": 56, "b": 10})  # the titles below the mode bar
    return figure


def _head_grid(values: np.ndarray, title: str) -> None:
    left, _ = st.columns([3, 1])
    with left:
        st.plotly_chart(head_grid_figure(values), key="attn_head_grid", config=MODEBAR_CONFIG)
    masses = ", ".join(f"{m:.3f}" for m in values.sum(axis=(1, 2)))
    st.caption(common.md_escape(f"{title}: one map per head over the image's grid (row 0 at the top); attention mass per head: {masses}"))


SCORE_WORDS = {
    "attention_bbox_share": "share inside the crop the model chose",
    "attention_gold_share": "share inside the gold boxes",
    "attention_image_mass": "share of the reply's attention on images",
}


def _scores_text(scores: dict) -> str:
    def number(v) -> str:
        return ", ".join(f"{x:.3f}" for x in v) if isinstance(v, list) else f"{v:.3f}"

    return "This turn's attention: " + "; ".join(f"{SCORE_WORDS.get(k, k)} {number(v)}" for k, v in scores.items())
