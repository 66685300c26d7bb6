"""Plotly drawing of page images with a heatmap and boxes on top. Drawing only: no maths here.

Every figure's axes are in page pixels with y pointing down, whatever size the image is shown at,
so a box, a crop region, a relevance map and an attention map all line up by their page
coordinates, and hovering anywhere reads page coordinates (and the map's score under the mouse).

Conventions shared with the map producers (search_engine/relevance.py, agent/attention.py):
- a map is a 2-D array `values[row, col]`, row 0 at the top;
- its `extent` is `(x0, y0, x1, y1)` in page pixels, the rectangle the whole grid covers; cell
  (i, j) covers x in [x0 + j*dx, x0 + (j+1)*dx) and y in [y0 + i*dy, y0 + (i+1)*dy) with
  dx = (x1-x0)/cols, dy = (y1-y0)/rows. NaN cells are drawn transparent (no data).
- a box is `[x1, y1, x2, y2]` in page pixels.

To keep figures light (a 5334x3000 slide would be ~50 MB as numbers), the page travels as one
downscaled JPEG data URI stretched over its page-pixel rectangle; only the axes keep full size.
"""
from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go
from PIL import Image

Box = Sequence[float]  # [x1, y1, x2, y2] in page pixels

DISPLAY_MAX_SIDE = 1280  # longest side, in pixels, of the image embedded in a figure
JPEG_QUALITY = 82

# Transparent at 0 so that cold regions leave the page readable; hot regions go yellow to red.
HEAT_COLORSCALE = [
    [0.0, "rgba(255, 255, 178, 0.0)"],
    [0.15, "rgba(254, 217, 118, 0.35)"],
    [0.4, "rgba(253, 141, 60, 0.7)"],
    [0.7, "rgba(240, 59, 32, 0.9)"],
    [1.0, "rgba(189, 0, 38, 1.0)"],
]


# Model attention: transparent at 0, then blue to purple, so it reads apart from relevance when both are on.
ATTENTION_COLORSCALE = [
    [0.0, "rgba(222, 235, 247, 0.0)"],
    [0.15, "rgba(158, 202, 225, 0.35)"],
    [0.4, "rgba(66, 146, 198, 0.7)"],
    [0.7, "rgba(84, 39, 143, 0.9)"],
    [1.0, "rgba(63, 0, 125, 1.0)"],
]


def image_data_uri(image: Image.Image, max_side: int = DISPLAY_MAX_SIDE, quality: int = JPEG_QUALITY) -> tuple[str, tuple[int, int]]:
    """The image as a JPEG data URI downscaled (never upscaled) to a longest side <= max_side, and its (w, h)."""
    if image.mode != "RGB":
        image = image.convert("RGB")
    scale = max_side / max(image.size)
    if scale < 1:
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        # reducing_gap: a fast integer box reduction first, then Lanczos on the small image
        # (0.2 s instead of 0.7 s for a 5334x3000 slide, with no visible difference).
        image = image.resize(size, Image.Resampling.LANCZOS, reducing_gap=2.0)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii"), image.size


def page_figure(
    image: Image.Image,
    *,
    region: Box | None = None,
    heatmap: np.ndarray | None = None,
    heatmap_extent: Box | None = None,
    boxes: Sequence[tuple[Box, str, str]] = (),
    opacity: float = 0.45,
    colorscale: str | list = HEAT_COLORSCALE,
    zrange: tuple[float, float] | None = (0.0, 1.0),
    heatmap_name: str = "score",
    title: str | None = None,
    height: int | None = None,
    max_side: int = DISPLAY_MAX_SIDE,
) -> go.Figure:
    """An interactive figure of `image` with an optional heatmap and labelled box outlines on top.

    `region` is the part of the page the image shows, in page pixels; the default is the whole
    image at (0, 0, width, height). Pass it for a crop so its axes read page coordinates.
    `heatmap` is drawn over `heatmap_extent` (default: `region`) with the given `opacity`;
    `zrange` fixes the colour range (None: the map's own min and max). `boxes` are
    (box, label, colour) outlines drawn above everything. The figure keeps its zoom across
    Streamlit reruns (`uirevision`), so moving an opacity slider does not reset the view.
    """
    width, height_px = image.size
    x0, y0, x1, y1 = (float(v) for v in (region if region is not None else (0, 0, width, height_px)))
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"region {region} is empty: expected [x1, y1, x2, y2] with x2 > x1 and y2 > y1")
    uri, (shown_w, shown_h) = image_data_uri(image, max_side=max_side)
    dx, dy = (x1 - x0) / shown_w, (y1 - y0) / shown_h

    fig = go.Figure()
    # go.Image places pixel centres at x0 + k*dx, so its left edge is at x0 - dx/2.
    fig.add_trace(
        go.Image(
            source=uri,
            x0=x0 + dx / 2,
            y0=y0 + dy / 2,
            dx=dx,
            dy=dy,
            name="page",
            hovertemplate="x %{x:.0f}, y %{y:.0f}<extra>page</extra>",
        )
    )
    if heatmap is not None:
        fig.add_trace(
            heatmap_trace(
                heatmap,
                heatmap_extent if heatmap_extent is not None else (x0, y0, x1, y1),
                opacity=opacity,
                colorscale=colorscale,
                zrange=zrange,
                name=heatmap_name,
            )
        )
    # one layout update for all outlines: fig.add_shape per box re-validates every shape so far
    # (quadratic: ~8 s for a page's 115 OCR lines, against ~0.1 s this way)
    fig.update_layout(shapes=[_outline(box, label, color) for box, label, color in boxes])

    fig.update_xaxes(range=[x0, x1], showgrid=False, zeroline=False, constrain="domain", title=None)
    # y points down as in the image; scaleanchor keeps page pixels square.
    fig.update_yaxes(range=[y1, y0], showgrid=False, zeroline=False, scaleanchor="x", scaleratio=1, constrain="domain")
    fig.update_layout(
        title=dict(text=title) if title else None,
        margin=dict(l=10, r=10, t=40 if title else 10, b=10),
        dragmode="zoom",
        uirevision=title or "page",
        plot_bgcolor="white",
        height=height,
    )
    return fig


def _outline(box: Box, label: str, color: str) -> dict:
    x1, y1, x2, y2 = (float(v) for v in box)
    return dict(
        type="rect",
        xref="x",
        yref="y",
        x0=x1,
        y0=y1,
        x1=x2,
        y1=y2,
        line=dict(color=color, width=3 if label else 1.5),
        fillcolor="rgba(0,0,0,0)",
        label=dict(text=label, textposition="top left", font=dict(color=color, size=13)),
        name=label,
    )


def heatmap_trace(
    values: np.ndarray,
    extent: Box,
    *,
    opacity: float = 0.45,
    colorscale: str | list = HEAT_COLORSCALE,
    zrange: tuple[float, float] | None = (0.0, 1.0),
    name: str = "score",
) -> go.Heatmap:
    """A map as a heatmap whose cells sit at their page-pixel positions (see the module docstring)."""
    # float32 travels as a compact base64 typed array; NaN stays NaN and is drawn as a gap
    values = np.asarray(values, dtype=np.float32)
    if values.ndim != 2 or 0 in values.shape:
        raise ValueError(f"a heatmap must be a non-empty 2-D array, got shape {values.shape}")
    ex0, ey0, ex1, ey1 = (float(v) for v in extent)
    if ex1 <= ex0 or ey1 <= ey0:
        raise ValueError(f"heatmap extent {extent} is empty: expected (x0, y0, x1, y1) with x1 > x0 and y1 > y0")
    rows, cols = values.shape
    cdx, cdy = (ex1 - ex0) / cols, (ey1 - ey0) / rows
    zmin, zmax = zrange if zrange is not None else (None, None)
    return go.Heatmap(
        z=values,
        x0=ex0 + cdx / 2,  # heatmap x0/y0 are cell centres
        dx=cdx,
        y0=ey0 + cdy / 2,
        dy=cdy,
        zmin=zmin,
        zmax=zmax,
        colorscale=colorscale,
        opacity=opacity,
        name=name,
        hoverongaps=False,
        colorbar=dict(title=dict(text=name), thickness=12, len=0.8),
        hovertemplate="x %{x:.0f}, y %{y:.0f}<br>" + name + " %{z:.3f}<extra></extra>",
    )


def crop_figure(image: Image.Image, *, region: Box | None = None, title: str | None = None, **kwargs) -> go.Figure:
    """The zoomed crop the model saw next. With `region` (the crop's page pixels) hover reads page coordinates."""
    return page_figure(image, region=region, title=title, **kwargs)



# --- the turn view's figure: one picture, switchable layers, nothing drawn over the page's text ----


@dataclass(frozen=True)
class EncodedImage:
    """An image already encoded for a figure (a JPEG data URI) and its encoded size, to cache."""

    uri: str
    size: tuple[int, int]


def encode_image(image: Image.Image, max_side: int = DISPLAY_MAX_SIDE) -> EncodedImage:
    uri, size = image_data_uri(image, max_side=max_side)
    return EncodedImage(uri, size)


@dataclass
class HeatLayer:
    """A map to draw over the picture (module docstring: values[row, col] over extent, page pixels)."""

    values: np.ndarray
    extent: Box
    name: str  # the legend entry and the colour bar's title
    colorscale: str | list = "heat"  # "heat", "attention", or a plotly colour scale
    zrange: tuple[float, float] | None = (0.0, 1.0)


COLOURSCALES = {"heat": HEAT_COLORSCALE, "attention": ATTENTION_COLORSCALE}
LEGEND_MARGIN = 34  # px above the picture for the legend (the layers, by name)
MODEBAR_MARGIN = 34  # px right of the picture for the vertical mode bar
COLOURBAR_MARGIN = 58  # px below the picture per row of colour bars


def figure_height(region: Box, plot_width: int, heat_layers: int, max_height: int = 2400) -> int:
    """The figure height at which a picture of `region` fills `plot_width` px (plus the margins)."""
    x0, y0, x1, y1 = (float(v) for v in region)
    picture = plot_width * (y1 - y0) / (x1 - x0)
    return int(min(max_height, picture + LEGEND_MARGIN + (COLOURBAR_MARGIN if heat_layers else 6)))


def layered_figure(
    picture: Image.Image | EncodedImage,
    *,
    region: Box,
    heatmaps: Sequence[HeatLayer] = (),
    outlines: Sequence[tuple[Box, str, str, str] | tuple[Box, str, str, str, str]] = (),
    opacity: float = 0.5,
    height: int | None = None,
    uirevision: str = "page",
    max_side: int = DISPLAY_MAX_SIDE,
) -> go.Figure:
    """The picture of `region` (page pixels) with maps and outlines as layers a person can switch.

    `outlines` are (box, name, colour, dash[, fill]); outlines of one name form one legend entry. Nothing
    is written on the picture itself: every layer is named in the legend above it (a click there
    hides or shows it), each map has its colour bar below it, and the vertical mode bar sits in
    the right margin, so no label covers the page's own text.
    """
    encoded = picture if isinstance(picture, EncodedImage) else encode_image(picture, max_side)
    x0, y0, x1, y1 = (float(v) for v in region)
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"region {region} is empty: expected [x1, y1, x2, y2] with x2 > x1 and y2 > y1")
    shown_w, shown_h = encoded.size
    dx, dy = (x1 - x0) / shown_w, (y1 - y0) / shown_h
    fig = go.Figure()
    fig.add_trace(go.Image(source=encoded.uri, x0=x0 + dx / 2, y0=y0 + dy / 2, dx=dx, dy=dy, name="page",
                           hovertemplate="x %{x:.0f}, y %{y:.0f}<extra>page pixels</extra>"))
    for i, heat in enumerate(heatmaps):
        trace = heatmap_trace(heat.values, heat.extent, opacity=opacity, colorscale=COLOURSCALES.get(heat.colorscale, heat.colorscale),
                              zrange=heat.zrange, name=heat.name)
        trace.update(showlegend=True, legendgroup=heat.name, colorbar=dict(
            orientation="h", x=0.5 * i, xanchor="left", y=0, yanchor="top", ypad=4, len=0.46, thickness=10,
            title=dict(text=heat.name, side="top"), tickfont=dict(size=11),
        ))
        fig.add_trace(trace)
    shapes, named = [], set()
    for box, name, colour, dash, *fill in outlines:
        bx0, by0, bx1, by1 = (float(v) for v in box)
        shapes.append(dict(type="rect", xref="x", yref="y", x0=bx0, y0=by0, x1=bx1, y1=by1, name=name, legendgroup=name,
                           showlegend=name not in named, line=dict(color=colour, width=2.5, dash=dash),
                           fillcolor=fill[0] if fill else "rgba(0,0,0,0)"))
        named.add(name)
    fig.update_layout(shapes=shapes)
    fig.update_xaxes(range=[x0, x1], showgrid=False, zeroline=False, constrain="domain", constraintoward="left", showticklabels=False, ticks="",
                     showline=True, mirror=True, linecolor="#c8c8c8")
    fig.update_yaxes(range=[y1, y0], showgrid=False, zeroline=False, scaleanchor="x", scaleratio=1, constrain="domain",
                     constraintoward="top", showticklabels=False, ticks="", showline=True, mirror=True, linecolor="#c8c8c8")
    fig.update_layout(
        height=height,
        margin=dict(l=2, r=MODEBAR_MARGIN, t=LEGEND_MARGIN, b=COLOURBAR_MARGIN if heatmaps else 6),
        legend=dict(orientation="h", x=0, xanchor="left", y=1, yanchor="bottom", font=dict(size=13), itemclick="toggle"),
        modebar=dict(orientation="v"),
        dragmode="zoom",
        uirevision=uirevision,
        plot_bgcolor="white",
    )
    return fig


MODEBAR_CONFIG = {
    "displaylogo": False,
    "displayModeBar": True,
    "modeBarButtonsToRemove": ["select2d", "lasso2d", "autoScale2d", "toggleSpikelines", "hoverClosestCartesian", "hoverCompareCartesian"],
    "scrollZoom": True,
}


# --- the episode graph (agent/episode_graph.py) ----------------------------------------------------

GRAPH_STYLE = {  # kind -> (legend name, marker symbol, colour)
    "question": ("question", "diamond", "#333333"),
    "query": ("search query", "circle", "#1f77b4"),
    "page": ("page shown", "square", "#1f9d55"),
    "crop": ("crop", "square-open", "#d62728"),
    "answer": ("answer", "star", "#e0a100"),
    "invalid": ("invalid reply", "x", "#8c8c8c"),
}
EDGE_STYLE = {"asked": "solid", "brought": "solid", "found again": "dot", "cropped": "solid", "answered": "dash", "invalid": "dot"}
GRAPH_ROW_PX = 64


def graph_figure(graph, current_turn: int | None = None) -> tuple[go.Figure, list[list[int]]]:
    """The episode graph as a figure, and per trace the turn each of its points opens (for on_select).

    Nodes of the current turn are ringed. Hover shows each node's full text; labels sit beside nodes.
    """
    fig = go.Figure()
    turns: list[list[int]] = []
    position = {n.key: (n.column, n.row) for n in graph.nodes}
    for kind in sorted({e.kind for e in graph.edges}):
        xs, ys = [], []
        for edge in (e for e in graph.edges if e.kind == kind):
            (x0, y0), (x1, y1) = position[edge.source], position[edge.target]
            xs += [x0, x1, None]
            ys += [y0, y1, None]
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line=dict(color="#b0b0b0", width=1.5, dash=EDGE_STYLE.get(kind, "solid")),
                                 hoverinfo="skip", showlegend=False, name=kind))
        turns.append([])
    for kind in (k for k in GRAPH_STYLE if any(n.kind == k for n in graph.nodes)):
        nodes = [n for n in graph.nodes if n.kind == kind]
        name, symbol, colour = GRAPH_STYLE[kind]
        ring = ["#000000" if current_turn is not None and n.turn == current_turn and kind != "question" else colour for n in nodes]
        fig.add_trace(go.Scatter(
            x=[n.column for n in nodes], y=[n.row for n in nodes], mode="markers+text", name=name,
            text=[n.label for n in nodes], textposition="bottom center", textfont=dict(size=12),
            customdata=[[n.turn, n.detail] for n in nodes], hovertemplate="%{customdata[1]}<extra></extra>",
            marker=dict(symbol=symbol, size=20, color=colour, line=dict(color=ring, width=[3 if r == "#000000" else 1 for r in ring])),
        ))
        turns.append([n.turn for n in nodes])
    rows = max([n.row for n in graph.nodes] + [0]) + 1
    columns = max([n.column for n in graph.nodes] + [0])
    fig.update_xaxes(visible=False, range=[-0.4, columns + 0.4], fixedrange=True)
    fig.update_yaxes(visible=False, range=[rows - 0.4, -0.6], fixedrange=True)
    fig.update_layout(
        height=int(110 + GRAPH_ROW_PX * rows), margin=dict(l=10, r=10, t=30, b=10), plot_bgcolor="white",
        legend=dict(orientation="h", x=0, y=1, yanchor="bottom"), clickmode="event+select", dragmode=False,
        hoverlabel=dict(namelength=-1),
    )
    return fig, turns
