"""Relevance maps: the maths on tiny arrays, then real pages of ../shared/corpus/vrag-demo."""
from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from search_engine.reading_context import phrases, reading_contexts
from search_engine.relevance import (
    BoxCache,
    box_relevance,
    grid_for,
    lexical_scores,
    paint_boxes,
    relevance_map,
    stretch,
)
from search_engine.tokenize import tokenize
from search_engine.types import Page

# --- paint_boxes -----------------------------------------------------------------------------------


def test_paint_two_boxes_into_a_4x4_grid():
    # a 400 x 400 page: cells are 100 x 100 pixels
    boxes = [(0, 0, 150, 90), (220, 310, 390, 400)]
    grid = paint_boxes(np.array([0.5, 1.0]), boxes, (400, 400), (4, 4), normalize=False)
    expected = np.array(
        [
            [0.5, 0.5, 0.0, 0.0],  # box 1 spans x 0..150 -> columns 0 and 1, y 0..90 -> row 0
            [0.0, 0.0, 0.0, 0.0],
            [0.0, 0.0, 0.0, 0.0],
            [0.0, 0.0, 1.0, 1.0],  # box 2 spans x 220..390 -> columns 2 and 3, y 310..400 -> row 3
        ],
        dtype=np.float32,
    )
    np.testing.assert_array_equal(grid, expected)


def test_paint_normalises_to_the_best_box():
    boxes = [(0, 0, 150, 90), (220, 310, 390, 400)]
    grid = paint_boxes(np.array([0.2, 0.4]), boxes, (400, 400), (4, 4))
    assert grid.dtype == np.float32 and grid.shape == (4, 4)
    assert grid.max() == 1.0 and grid[0, 0] == pytest.approx(0.5) and grid[1, 1] == 0.0


def test_overlapping_boxes_take_the_max_not_the_sum():
    boxes = [(0, 0, 200, 200), (100, 100, 300, 300)]
    grid = paint_boxes(np.array([0.3, 0.6]), boxes, (400, 400), (4, 4), normalize=False)
    assert grid[1, 1] == pytest.approx(0.6)  # both boxes cover cell (1, 1)
    assert grid[0, 0] == pytest.approx(0.3) and grid[2, 2] == pytest.approx(0.6)


def test_box_edges_on_cell_boundaries_are_half_open():
    # x 100..200 covers exactly column 1: it must not bleed into column 2
    grid = paint_boxes(np.array([1.0]), [(100, 100, 200, 200)], (400, 400), (4, 4))
    assert grid.sum() == 1.0 and grid[1, 1] == 1.0


def test_a_tiny_box_still_lights_its_cell_on_a_coarse_grid():
    grid = paint_boxes(np.array([0.7]), [(250, 10, 252, 12)], (400, 400), (4, 4))
    assert grid[0, 2] == 1.0 and grid.sum() == 1.0


def test_non_square_grid_and_page():
    # a 5334 x 3000 slide on a (3, 6) grid: cells are 889 x 1000
    grid = paint_boxes(np.array([1.0]), [(900, 2100, 1700, 2900)], (5334, 3000), (3, 6))
    assert np.argwhere(grid == 1.0).tolist() == [[2, 1]]


def test_empty_page_and_zero_scores_give_zeros():
    assert paint_boxes(np.zeros(0), [], (400, 300), (3, 4)).tolist() == np.zeros((3, 4)).tolist()
    grid = paint_boxes(np.zeros(2), [(0, 0, 10, 10), (20, 20, 30, 30)], (400, 300), (3, 4))
    assert not grid.any() and not np.isnan(grid).any()


def test_negative_nan_and_off_page_boxes_are_ignored_or_clipped():
    boxes = [(0, 0, 100, 100), (0, 0, 100, 100), (350, 250, 900, 900), (500, 500, 600, 600)]
    grid = paint_boxes(np.array([-0.5, np.nan, 0.8, 1.0]), boxes, (400, 300), (3, 4), normalize=False)
    # the box past the page edge is clipped to the last cell; the box wholly off the page paints nothing
    assert grid[2, 3] == pytest.approx(0.8)
    assert grid.sum() == pytest.approx(0.8)


def test_bad_arguments_get_clear_messages():
    with pytest.raises(ValueError, match="2 scores for 1 boxes"):
        paint_boxes(np.ones(2), [(0, 0, 1, 1)], (10, 10), (2, 2))
    with pytest.raises(ValueError, match="grid"):
        paint_boxes(np.ones(1), [(0, 0, 1, 1)], (10, 10), (0, 2))
    with pytest.raises(ValueError, match="page size"):
        paint_boxes(np.ones(1), [(0, 0, 1, 1)], (0, 10), (2, 2))


def test_grid_for_follows_the_page_aspect():
    assert grid_for((5334, 3000)) == (54, 96)
    assert grid_for((1024, 768)) == (72, 96)
    assert grid_for((768, 1024), long_side=32) == (32, 24)


# --- lexical_scores ---------------------------------------------------------------------------------


def test_lexical_full_match_scores_one_and_no_match_zero():
    boxes = [Counter(["china", "47.6"]), Counter(["japan", "17.0"]), Counter(["korea", "22.1"])]
    scores = lexical_scores(["china"], boxes)
    assert scores[1] == 0 and scores[2] == 0
    assert scores[0] == pytest.approx(1.0, abs=0.15)  # average length, tf 1: the ceiling
    assert scores.argmax() == 0


def test_lexical_rare_terms_weigh_more_than_common_ones():
    # "trips" is on every line of the page, "china" on one: matching "china" counts for more
    boxes = [Counter(["trips", "china"]), Counter(["trips", "japan"]), Counter(["trips", "korea"]), Counter(["trips"])]
    scores = lexical_scores(["china", "trips"], boxes)
    assert scores[0] > 0.9
    assert 0 < scores[1] < 0.3 and scores[1] == pytest.approx(scores[2])


def test_lexical_terms_missing_from_the_page_do_not_lower_scores():
    boxes = [Counter(["china"]), Counter(["japan"])]
    with_absent = lexical_scores(["china", "zimbabwe"], boxes)
    without = lexical_scores(["china"], boxes)
    np.testing.assert_allclose(with_absent, without)


def test_lexical_empty_inputs():
    assert lexical_scores([], [Counter(["a"])]).tolist() == [0.0]
    assert lexical_scores(["a"], []).shape == (0,)
    assert lexical_scores(["zzz"], [Counter(["a"])]).tolist() == [0.0]


# --- reading_contexts ------------------------------------------------------------------------------


def _table():
    #  Outbound Trips (Mn.)                 <- caption, flush left, alone in its row
    #  Country   2013   2014                <- header row
    #  China     61.1   71.2
    #  Japan     17.1    7.9                <- "7.9" answers "Japan in 2014"
    texts = ["BIG SLIDE TITLE ABOUT EVERYTHING", "Outbound Trips (Mn.)", "Country", "2013", "2014",
             "China", "61.1", "71.2", "Japan", "17.1", "7.9"]  # fmt: skip
    boxes = [
        (0, 0, 900, 40),
        (0, 60, 200, 80),
        (0, 100, 60, 120), (300, 100, 340, 120), (400, 100, 440, 120),
        (0, 140, 50, 160), (302, 140, 338, 160), (402, 140, 438, 160),
        (0, 180, 45, 200), (302, 180, 338, 200), (405, 180, 435, 200),
    ]  # fmt: skip
    return texts, boxes


def test_a_table_cell_reads_with_caption_row_header_and_column_header():
    texts, boxes = _table()
    contexts = reading_contexts(texts, boxes)
    assert contexts[10] == "Outbound Trips (Mn.): Japan 2014 7.9"
    assert contexts[6] == "Outbound Trips (Mn.): China 2013 61.1"
    assert contexts[8] == "Outbound Trips (Mn.): Country Japan"  # a row header reads with its column's header
    assert contexts[4] == "Outbound Trips (Mn.): Country 2014"  # a header cell: its row header and the caption


def test_prose_lines_read_as_themselves():
    texts, boxes = _table()
    contexts = reading_contexts(texts, boxes)
    assert contexts[0] == texts[0] and contexts[1] == texts[1]
    lines = ["First line of a paragraph", "second line of it", "third line"]
    assert reading_contexts(lines, [(0, 0, 500, 20), (0, 25, 480, 45), (0, 50, 300, 70)]) == lines


def test_reading_contexts_edge_cases():
    assert reading_contexts([], []) == []
    assert reading_contexts(["a"], [(0, 0, 1, 1)]) == ["a"]
    with pytest.raises(ValueError, match="2 texts for 1 boxes"):
        reading_contexts(["a", "b"], [(0, 0, 1, 1)])


def test_reading_contexts_scale_to_many_boxes():
    # a 60 x 40 table (2,400 boxes): header row "col{c}", row labels "row{r}", numbers elsewhere.
    # It is handled in chunks, not with 2,400 x 2,400 matrices per rule.
    def text(r, c):
        return f"col{c}" if r == 0 else f"row{r}" if c == 0 else f"{r}.{c}"

    texts = [text(r, c) for r in range(60) for c in range(40)]
    boxes = [(c * 50, r * 20, c * 50 + 40, r * 20 + 15) for r in range(60) for c in range(40)]
    contexts = reading_contexts(texts, boxes)
    assert contexts[41 * 40 + 7] == "row41 col7 41.7"
    assert contexts[0] == "col0"  # the top-left corner: nothing to its left, nothing above it


def test_two_line_column_headers_and_wordy_row_headers():
    texts = ["Uncertainty", "Power", "avoidance", "Distance", "1", "Japan", "54", "95"]
    boxes = [
        (489, 478, 584, 499), (208, 476, 266, 500),  # header line 1
        (493, 499, 580, 523), (200, 499, 273, 523),  # header line 2, touching line 1
        (40, 594, 55, 616), (92, 595, 142, 617), (224, 594, 250, 616), (523, 594, 549, 616),  # a rank, then a labelled row
    ]  # fmt: skip
    contexts = reading_contexts(texts, boxes)
    assert contexts[7] == "Japan Uncertainty avoidance 95"  # the rank "1" is not the row's label
    assert contexts[6] == "Japan Power Distance 54"


# --- phrases (PDF words) ----------------------------------------------------------------------------


def test_words_on_a_line_join_into_phrases_and_table_columns_stay_apart():
    words = [
        (0, 0, 40, 12), (44, 1, 90, 13),  # "Water delivered": a space apart
        (200, 0, 240, 12),  # "2025": a table column away
        (0, 30, 40, 42), (43, 30, 80, 42),  # the next line
    ]  # fmt: skip
    assert phrases(words).tolist() == [0, 0, 1, 2, 2]
    assert phrases([]).tolist() == []


# --- scoring real pages -----------------------------------------------------------------------------

QUESTIONS = json.loads((Path(__file__).parents[2] / "bench" / "questions" / "vrag_demo_dev.json").read_text("utf-8"))
TABLE_QUESTIONS = [q for q in QUESTIONS["examples"] if "evidence_row_box" in q["meta_info"]]


def _centre_inside(box, region) -> bool:
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return region[0] <= cx <= region[2] and region[1] <= cy <= region[3]


class CountingEmbedder:
    """The real embedder, counting the texts it is asked to encode (to prove the cache works)."""

    def __init__(self, inner):
        self.inner, self.texts_encoded, self.queries_encoded = inner, 0, 0

    def encode_texts(self, texts):
        self.texts_encoded += len(texts)
        return self.inner.encode_texts(texts)

    def encode_query(self, query):
        self.queries_encoded += 1
        return self.inner.encode_query(query)


@pytest.fixture(scope="module")
def cache(demo_index) -> BoxCache:
    return BoxCache.for_index(demo_index)


def test_the_demo_set_has_table_questions_with_row_boxes():
    assert len(TABLE_QUESTIONS) >= 3


@pytest.mark.slow
@pytest.mark.parametrize("question", TABLE_QUESTIONS, ids=[q["uid"] for q in TABLE_QUESTIONS])
def test_the_hottest_box_is_in_the_asked_cells_row(demo_index, cache, question):
    meta = question["meta_info"]
    page = demo_index.page(meta["page_ids"][0])
    scores = box_relevance(question["query"], page, cache)
    assert scores.combined.shape == (len(page.boxes),)
    best = int(np.argmax(scores.combined))
    hottest = page.boxes[best]
    assert _centre_inside(hottest.box, meta["evidence_row_box"]), (
        f"hottest box {hottest.text!r} at {hottest.box} (read as {scores.contexts[best]!r}) "
        f"is outside the row {meta['evidence_row_box']} of the answer {question['reference_answer']!r}"
    )
    # and the map agrees: its hottest cell lies on that row
    rmap = relevance_map(question["query"], page, cache)
    rows, cols = rmap.values.shape
    i, j = np.unravel_index(np.argmax(rmap.values), rmap.values.shape)
    cell_y = (i + 0.5) * page.height / rows
    row_box = meta["evidence_row_box"]
    assert row_box[1] - page.height / rows <= cell_y <= row_box[3] + page.height / rows


@pytest.mark.slow
def test_relevance_map_shape_extent_and_range(demo_index, cache):
    page = demo_index.page("aliyun4_4")
    rmap = relevance_map("VPC对等连接是哪一年发布的？", page, cache)
    assert rmap.values.shape == grid_for((page.width, page.height)) == (54, 96)
    assert rmap.values.dtype == np.float32
    assert rmap.extent == (0.0, 0.0, 5334.0, 3000.0)
    assert rmap.values.max() == pytest.approx(1.0) and rmap.values.min() == 0.0
    assert 0 <= rmap.floor < rmap.peak <= 1
    assert len(rmap.box_scores.contexts) == len(page.boxes)
    for name in ("dense", "lexical", "combined"):
        values = getattr(rmap.box_scores, name)
        assert values.shape == (len(page.boxes),) and (values >= 0).all() and (values <= 1).all()
    custom = relevance_map("VPC", page, cache, grid_shape=(3, 5))
    assert custom.values.shape == (3, 5)


@pytest.mark.slow
def test_box_embeddings_are_computed_once_per_page(demo_index):
    embedder = CountingEmbedder(demo_index.embedder)
    cache = BoxCache(embedder, tokenize)
    page = demo_index.page("slide_14_1024")  # a small page: this test embeds it from scratch
    first = box_relevance("outbound trips of Japan in 2014", page, cache)
    encoded = embedder.texts_encoded
    assert encoded >= len(page.boxes)  # the box texts, plus the table cells' reading contexts
    second = box_relevance("outbound trips of India in 2020", page, cache)
    again = box_relevance("outbound trips of India in 2020", page, cache)
    assert embedder.texts_encoded == encoded  # no box embedded twice
    assert embedder.queries_encoded == 2  # the repeated query was remembered
    np.testing.assert_array_equal(second.combined, again.combined)
    assert not np.array_equal(first.combined, second.combined)
    assert len(cache) == 1


@pytest.mark.slow
def test_a_page_whose_text_changed_is_recomputed(demo_index):
    embedder = CountingEmbedder(demo_index.embedder)
    cache = BoxCache(embedder, tokenize)
    page = demo_index.page("slide_8_1024")
    box_relevance("Japan", page, cache)
    encoded = embedder.texts_encoded
    changed = Page.from_dict({**page.to_dict(), "boxes": [{"text": "Japan", "box": [10, 10, 100, 40]}]})
    scores = box_relevance("Japan", changed, cache)
    assert embedder.texts_encoded == encoded + 1
    assert scores.combined.shape == (1,) and scores.combined[0] > 0.5


def test_a_page_without_text_gives_an_empty_map(demo_index):
    page = Page(page_id="blank", source="", page=1, image_file="", width=800, height=600, text_source="none")
    rmap = relevance_map("anything", page, BoxCache.for_index(demo_index))
    assert rmap.values.shape == (72, 96) and not rmap.values.any()
    assert rmap.peak == 0.0 and rmap.box_scores.combined.shape == (0,)


@pytest.mark.slow
def test_a_query_matching_nothing_gives_low_scores_not_errors(demo_index, cache):
    page = demo_index.page("slide_3_1024")
    rmap = relevance_map("zzzz qqqq", page, cache)
    assert rmap.box_scores.lexical.max() == 0.0
    assert np.isfinite(rmap.values).all() and rmap.values.max() <= 1.0


def test_stretch_maps_the_median_box_to_zero_and_the_best_to_one():
    shown, peak, floor = stretch(np.array([0.2, 0.3, 0.4, 0.5, 0.8], dtype=np.float32))
    assert (peak, floor) == (pytest.approx(0.8), pytest.approx(0.4))
    np.testing.assert_allclose(shown, [0, 0, 0, 0.25, 1.0], atol=1e-6)
    assert stretch(np.array([0.3]))[0].tolist() == [1.0]  # a lone line that matches at all shows
    assert stretch(np.array([0.0, 0.0]))[0].tolist() == [0.0, 0.0]
    assert stretch(np.zeros(0))[0].shape == (0,)


@pytest.mark.slow
def test_a_warm_page_maps_far_under_200_ms(demo_index, cache):
    # the largest demo page (162 OCR boxes), boxes and query already embedded: what is left is our
    # own scoring and painting. bench/relevance_speed.py measures all 25 pages, query encoding included.
    page = demo_index.page("slide_3_1024")
    query = "How many outbound trips will Japan make in 2020?"
    relevance_map(query, page, cache)
    times = []
    for _ in range(15):
        started = time.perf_counter()
        relevance_map(query, page, cache)
        times.append(time.perf_counter() - started)
    assert sorted(times)[len(times) // 2] < 0.2
