"""The attention-map maths on tiny hand-made arrays (agent/attention_maps.py): no model involved."""
from __future__ import annotations

import numpy as np
import pytest

from agent import attention_maps as am


# --- which tokens --------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "reply, select, expected",
    [
        ("<think>t</think><bbox>[1, 2, 3, 4]</bbox>", "bbox", "[1, 2, 3, 4]"),
        ("<think>t</think><bbox> [1, 2, 3, 4]\n</bbox>", "action", "[1, 2, 3, 4]"),
        ("<think>t</think><answer> 4.2 billion </answer>", "answer", "4.2 billion"),
        ("<think>t</think><search>revenue 2023</search>", "search", "revenue 2023"),
        ("<think>t</think><answer>a</answer><bbox>[1,2,3,4]</bbox>", "action", "a"),  # the reference's first match
        ("<think>t</think><answer>a</answer><bbox>[1,2,3,4]</bbox>", "bbox", "[1,2,3,4]"),
        ("<think>t</think>\n<answer>x</answer>", "reply", "<think>t</think>\n<answer>x</answer>"),
    ],
)
def test_selection_span_picks_the_text(reply, select, expected):
    start, end = am.selection_span(reply, select)
    assert reply[start:end] == expected


@pytest.mark.parametrize(
    "reply, select",
    [
        ("<think>t</think><search>q</search>", "bbox"),
        ("<think>t</think><answer>   </answer>", "answer"),
        ("<think>only thinking</think>", "action"),
        ("<think>t</think><answer>unclosed", "answer"),
        ("", "reply"),
    ],
)
def test_selection_span_none_when_absent(reply, select):
    assert am.selection_span(reply, select) is None


def test_selection_span_rejects_unknown_mode():
    with pytest.raises(ValueError, match="select must be one of"):
        am.selection_span("<answer>x</answer>", "thought")


def test_tokens_in_span_uses_overlap_and_skips_zero_width():
    offsets = np.array([[0, 0], [0, 5], [5, 6], [6, 9], [9, 9], [9, 12], [12, 20]])
    assert am.tokens_in_span(offsets, 5, 9).tolist() == [2, 3]
    assert am.tokens_in_span(offsets, 7, 10).tolist() == [3, 5]  # partial overlaps count
    assert am.tokens_in_span(offsets, 20, 25).tolist() == []


def test_producing_rows_are_one_step_earlier():
    assert am.producing_rows(np.array([5, 6, 9])).tolist() == [4, 5, 8]
    with pytest.raises(ValueError):
        am.producing_rows(np.array([0, 1]))


def test_expand_image_pads_repeats_each_placeholder_in_order():
    pad = "<|image_pad|>"
    text = f"a{pad}b{pad}c"
    assert am.expand_image_pads(text, [2, 3]) == f"a{pad * 2}b{pad * 3}c"
    with pytest.raises(ValueError, match="2 image placeholders but 1 images"):
        am.expand_image_pads(text, [2])


def test_reply_spans_find_identical_replies_in_order():
    start, end = "<|im_start|>assistant\n", "<|im_end|>"
    chat = f"{start}same{end}\n<|im_start|>user\nx{end}\n{start}same{end}\n"
    spans = am.reply_spans(chat, ["same", "same"])
    assert spans[0][0] < spans[1][0]
    assert all(chat[a:b] == "same" for a, b in spans)
    with pytest.raises(ValueError, match="reply 1"):
        am.reply_spans(chat, ["same", "other"])


# --- which columns, grid -------------------------------------------------------------------------

def test_image_token_spans_checked_against_grids():
    P = 9
    ids = np.array([1, P, P, P, P, 2, 3, P, P, P, P, P, P, 4])
    assert am.image_token_spans(ids, P, [[1, 4, 4], [1, 4, 6]]) == [(1, 5), (7, 13)]
    with pytest.raises(ValueError, match="has 6 tokens, image_grid_thw \\[1, 4, 4\\] needs 4"):
        am.image_token_spans(ids, P, [[1, 4, 4], [1, 4, 4]])
    with pytest.raises(ValueError, match="2 runs of image tokens but 1 images"):
        am.image_token_spans(ids, P, [[1, 4, 4]])


def test_token_grid_is_row_major_over_merged_patches():
    grid = am.token_grid(np.arange(6), [1, 4, 6])  # 4x6 patches -> 2x3 tokens
    assert grid.tolist() == [[0, 1, 2], [3, 4, 5]]
    with pytest.raises(ValueError, match="do not fill"):
        am.token_grid(np.arange(5), [1, 4, 6])


# --- page pixels ---------------------------------------------------------------------------------

def test_cell_box_and_cell_at_agree():
    extent, shape = (100, 50, 400, 250), (4, 6)  # cells 50 x 50
    assert am.cell_box(extent, shape, 1, 2) == [200, 100, 250, 150]
    assert am.cell_at(extent, shape, 210, 149.9) == (1, 2)
    assert am.cell_at(extent, shape, 399.99, 249.99) == (3, 5)
    assert am.cell_at(extent, shape, 400, 100) is None
    assert am.cell_at(extent, shape, 99, 100) is None


def test_box_weights_are_area_fractions():
    w = am.box_weights((0, 0, 100, 50), (1, 2), [25, 0, 75, 25])  # cells 50x50
    assert w.tolist() == [[0.25, 0.25]]
    w = am.box_weights((0, 0, 100, 100), (2, 2), [-10, -10, 500, 500])
    assert w.tolist() == [[1, 1], [1, 1]]
    assert am.box_weights((0, 0, 100, 100), (2, 2), [200, 200, 300, 300]).sum() == 0


# --- scores --------------------------------------------------------------------------------------

def test_mass_inside_by_hand():
    values = np.array([[1.0, 2.0], [3.0, 4.0]])  # cells of 10x10 over (0, 0, 20, 20)
    extent = (0, 0, 20, 20)
    assert am.mass_inside(values, extent, [0, 0, 10, 10]) == 1.0
    assert am.mass_inside(values, extent, [0, 0, 20, 10]) == 3.0
    assert am.mass_inside(values, extent, [5, 5, 15, 15]) == pytest.approx(0.25 * (1 + 2 + 3 + 4))
    assert am.mass_inside(values, extent, [0, 10, 20, 15]) == pytest.approx(0.5 * 7)


def test_region_share_over_several_maps():
    a = (np.array([[1.0, 3.0]]), (0, 0, 20, 10))  # page A: cells [0,10) and [10,20)
    b = (np.array([[4.0]]), (100, 100, 200, 200))  # a crop of page B
    # gold box on page A's right cell only; map b has no gold box: it only adds to the total
    assert am.region_share([a, b], [[[10, 0, 20, 10]], []]) == pytest.approx(3 / 8)
    assert am.region_share([a, b], [[], [[150, 100, 200, 200]]]) == pytest.approx(2 / 8)
    assert am.region_share([a], [[[0, 0, 20, 10]]]) == pytest.approx(1.0)
    # overlapping boxes never count a cell twice
    assert am.region_share([a], [[[0, 0, 20, 10], [0, 0, 20, 10]]]) == pytest.approx(1.0)
    assert am.region_share([(np.zeros((2, 2)), (0, 0, 1, 1))], [[[0, 0, 1, 1]]]) is None


def test_per_head_share_scores_each_head():
    values = np.array([[[1.0, 3.0]], [[2.0, 0.0]]])  # two heads over cells [0,10) and [10,20)
    assert am.per_head_share([(values, (0, 0, 20, 10))], [[[10, 0, 20, 10]]]) == [pytest.approx(0.75), pytest.approx(0.0)]
    assert am.token_grid(np.arange(12).reshape(2, 6), [1, 4, 6]).tolist() == [[[0, 1, 2], [3, 4, 5]], [[6, 7, 8], [9, 10, 11]]]


# --- attention sinks -----------------------------------------------------------------------------

def test_sink_cells_are_where_the_baseline_piles_up():
    baseline = np.full((4, 5), 1.0)
    baseline[0, 0] = 400.0  # 400 / 419 of the mass on one of 20 cells: a sink
    assert am.sink_cells(baseline).tolist() == (np.arange(20).reshape(4, 5) == 0).tolist()
    assert not am.sink_cells(np.ones((4, 5))).any()  # a flat baseline has no sinks
    assert not am.sink_cells(np.zeros((2, 2))).any()
    assert am.sink_cells(np.array([[1.0, 1.0, 1.0, 7.0]]), factor=2.0).tolist() == [[False, False, False, True]]


def test_correct_sinks_by_hand():
    values = np.array([[0.4, 0.1], [0.1, 0.2]], np.float32)
    baseline = np.array([[0.9, 0.0], [0.0, 0.0]], np.float32)
    assert am.correct_sinks(values, baseline, "none").tolist() == values.tolist()
    dropped = am.correct_sinks(values, baseline, "drop", factor=2.0)
    np.testing.assert_allclose(dropped, [[0.0, 0.2], [0.2, 0.4]], rtol=1e-6)  # 0.4 re-shared, total kept at 0.8
    subtracted = am.correct_sinks(values, baseline, "baseline")
    np.testing.assert_allclose(subtracted, [[0.0, 0.1], [0.1, 0.2]], rtol=1e-6)  # 0.4 - 0.9 * 0.8/0.9 < 0: clipped
    assert dropped.dtype == np.float32
    # per head: each head against its own baseline
    stacked = am.correct_sinks(np.stack([values, values]), np.stack([baseline, np.ones((2, 2), np.float32)]), "drop", factor=2.0)
    np.testing.assert_allclose(stacked[0], dropped) and np.testing.assert_allclose(stacked[1], values)
    # all the mass on sinks: nothing left to re-share
    assert am.correct_sinks(np.array([[1.0, 0.0]]), np.array([[1.0, 0.0]]), "drop", factor=1.5).sum() == 0
    with pytest.raises(ValueError, match="sink must be one of"):
        am.correct_sinks(values, baseline, "clip")
    with pytest.raises(ValueError, match="differ in shape"):
        am.correct_sinks(values, baseline[:1], "drop")
