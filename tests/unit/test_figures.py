"""Figure structure (traces, shapes, axes in page pixels), not pixels."""
from __future__ import annotations

import base64
import io
import json
import time

import numpy as np
import pytest
from PIL import Image

from agent.figures import DISPLAY_MAX_SIDE, crop_figure, heatmap_trace, page_figure


def _embedded_image(fig) -> Image.Image:
    uri = fig.data[0].source
    assert uri.startswith("data:image/jpeg;base64,")
    return Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))


@pytest.fixture
def wide_page() -> Image.Image:
    # the size of the aliyun slides in the demo corpus
    return Image.new("RGB", (5334, 3000), "white")


def test_page_only_axes_are_page_pixels_y_down(wide_page):
    fig = page_figure(wide_page)
    assert [t.type for t in fig.data] == ["image"]
    assert tuple(fig.layout.xaxis.range) == (0, 5334)
    assert tuple(fig.layout.yaxis.range) == (3000, 0)  # reversed: y grows downwards as in the image
    assert fig.layout.yaxis.scaleanchor == "x" and fig.layout.yaxis.scaleratio == 1


def test_large_page_is_downscaled_but_still_spans_the_page(wide_page):
    fig = page_figure(wide_page)
    shown = _embedded_image(fig)
    assert max(shown.size) == DISPLAY_MAX_SIDE
    trace = fig.data[0]
    # go.Image's left edge is x0 - dx/2; its right edge is that plus width * dx
    left, top = trace.x0 - trace.dx / 2, trace.y0 - trace.dy / 2
    assert left == pytest.approx(0) and top == pytest.approx(0)
    assert left + shown.width * trace.dx == pytest.approx(5334)
    assert top + shown.height * trace.dy == pytest.approx(3000)
    assert len(fig.to_json()) < 600_000  # light enough to send to the browser every rerun


def test_small_page_is_not_upscaled():
    fig = page_figure(Image.new("RGB", (300, 200), "white"))
    assert _embedded_image(fig).size == (300, 200)
    assert fig.data[0].dx == pytest.approx(1.0)


def test_heatmap_cells_sit_at_their_page_positions(wide_page):
    values = np.zeros((3, 4))
    values[1, 2] = 1.0
    fig = page_figure(wide_page, heatmap=values, heatmap_extent=(1000, 600, 3000, 2400), opacity=0.3)
    assert [t.type for t in fig.data] == ["image", "heatmap"]
    hm = fig.data[1]
    assert hm.opacity == 0.3
    assert hm.zmin == 0 and hm.zmax == 1
    # cells are 500 x 600 page pixels; x0/y0 are the centres of the first cell
    assert (hm.dx, hm.dy) == (500, 600)
    assert (hm.x0, hm.y0) == (1250, 900)
    hot_row, hot_col = np.argwhere(np.asarray(hm.z) == 1.0)[0]
    assert hm.x0 + hot_col * hm.dx == 2250  # the cell covering x 2000..2500
    assert hm.y0 + hot_row * hm.dy == 1500  # the cell covering y 1200..1800
    assert "%{z" in hm.hovertemplate and "%{x" in hm.hovertemplate and "%{y" in hm.hovertemplate


def test_heatmap_defaults_to_the_whole_page(wide_page):
    fig = page_figure(wide_page, heatmap=np.ones((30, 50)))
    hm = fig.data[1]
    assert hm.x0 - hm.dx / 2 == pytest.approx(0) and hm.x0 - hm.dx / 2 + 50 * hm.dx == pytest.approx(5334)
    assert hm.y0 - hm.dy / 2 == pytest.approx(0) and hm.y0 - hm.dy / 2 + 30 * hm.dy == pytest.approx(3000)


def test_boxes_are_outlines_at_page_coordinates_on_top(wide_page):
    boxes = [((100, 200, 1100, 900), "crop", "red"), ((50.5, 60, 70, 80), "gold", "#00aa00")]
    fig = page_figure(wide_page, heatmap=np.ones((2, 2)), boxes=boxes)
    assert len(fig.layout.shapes) == 2
    crop, gold = fig.layout.shapes
    assert (crop.x0, crop.y0, crop.x1, crop.y1) == (100, 200, 1100, 900)
    assert (crop.xref, crop.yref) == ("x", "y")
    assert crop.line.color == "red" and crop.label.text == "crop"
    assert gold.x0 == 50.5 and gold.label.text == "gold" and gold.line.color == "#00aa00"
    assert crop.layer in (None, "above")  # shapes default above traces: outlines stay on top of the heatmap


def test_crop_figure_reads_page_coordinates():
    crop = Image.new("RGB", (400, 300), "gray")
    fig = crop_figure(crop, region=(2000, 1000, 2800, 1600), title="zoom")
    assert tuple(fig.layout.xaxis.range) == (2000, 2800)
    assert tuple(fig.layout.yaxis.range) == (1600, 1000)
    trace = fig.data[0]
    assert trace.dx == pytest.approx(2.0) and trace.x0 - trace.dx / 2 == pytest.approx(2000)
    assert fig.layout.title.text == "zoom"


def test_crop_figure_without_region_uses_image_pixels():
    fig = crop_figure(Image.new("RGB", (400, 300), "gray"))
    assert tuple(fig.layout.xaxis.range) == (0, 400)
    assert tuple(fig.layout.yaxis.range) == (300, 0)


def test_figure_is_json_serialisable_with_nan_cells(wide_page):
    values = np.full((2, 2), np.nan)
    values[0, 0] = 0.5
    fig = page_figure(wide_page, heatmap=values, zrange=None)
    z = json.loads(fig.to_json())["data"][1]["z"]
    # plotly sends arrays as base64 typed arrays; NaN cells survive and plotly.js draws them as gaps
    sent = np.frombuffer(base64.b64decode(z["bdata"]), dtype=z["dtype"]).reshape(2, 2)
    assert sent[0, 0] == 0.5 and np.isnan(sent[1, 1])
    assert fig.data[1].zmin is None


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(heatmap=np.ones(4)), "2-D"),
        (dict(heatmap=np.ones((0, 3))), "2-D"),
        (dict(heatmap=np.ones((2, 2)), heatmap_extent=(10, 10, 10, 20)), "extent"),
        (dict(region=(5, 5, 1, 1)), "region"),
    ],
)
def test_bad_input_gets_a_clear_message(kwargs, message):
    with pytest.raises(ValueError, match=message):
        page_figure(Image.new("RGB", (10, 10)), **kwargs)


def test_heatmap_trace_alone_can_be_added_to_another_figure():
    trace = heatmap_trace(np.eye(3), (0, 0, 30, 60), name="attention")
    assert trace.name == "attention" and (trace.dx, trace.dy) == (10, 20)
    assert "attention" in trace.hovertemplate


def test_many_boxes_stay_fast(wide_page):
    # a page's OCR lines outlined at once: shapes are set in one layout update, not one by one
    boxes = [((10 * i, 5 * i, 10 * i + 300, 5 * i + 40), "", "#3366cc") for i in range(300)]
    started = time.perf_counter()
    fig = page_figure(wide_page, boxes=boxes)
    assert len(fig.layout.shapes) == 300
    assert fig.layout.shapes[299].x0 == 2990 and fig.layout.shapes[299].y1 == 1535
    assert time.perf_counter() - started < 5  # adding them one by one took tens of seconds
