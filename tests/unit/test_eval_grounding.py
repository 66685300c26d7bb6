"""Grounding metrics on hand cases: IoU with the union of gold boxes, the gold-box shapes a dataset may
use, and a trajectory's crop turns scored the way its protocol profile maps a bbox onto the page."""
from __future__ import annotations

import pytest

from agent.eval_grounding import (
    GoldBoxError, cover_of_union, gold_boxes, grounding_scores, iou_with_union, trajectory_gold_boxes, union_area,
)
from agent.protocol import page_view, region_view
from agent.trajectory import Trajectory, Turn


@pytest.mark.parametrize("box, gold, iou", [
    ([0, 0, 10, 10], [[0, 0, 10, 10]], 1.0),
    ([0, 0, 10, 10], [[20, 20, 30, 30]], 0.0),
    ([0, 0, 10, 10], [[10, 0, 20, 10]], 0.0),  # touching edges share no area
    ([0, 0, 10, 10], [[5, 5, 15, 15]], 25 / 175),
    ([0, 0, 10, 10], [[0, 0, 20, 20]], 100 / 400),
    ([0, 0, 30, 10], [[0, 0, 10, 10], [20, 0, 30, 10]], 200 / 300),  # one box over two gold boxes
    ([0, 0, 15, 10], [[0, 0, 10, 10], [5, 0, 15, 10]], 1.0),  # overlapping gold boxes count once
    ([0, 0, 10, 10], [], 0.0),
])
def test_iou_with_union_by_hand(box, gold, iou):
    assert iou_with_union(box, gold) == pytest.approx(iou)


def test_union_and_cover_by_hand():
    assert union_area([[0, 0, 10, 10], [5, 0, 15, 10], [0, 20, 1, 21]]) == pytest.approx(151)
    assert union_area([[0, 0, 10, 10], [2, 2, 4, 4]]) == pytest.approx(100)  # nested
    assert cover_of_union([0, 0, 10, 10], [[5, 5, 15, 15]]) == pytest.approx(0.25)
    assert cover_of_union([0, 0, 100, 100], [[5, 5, 15, 15], [20, 20, 30, 30]]) == 1.0
    assert cover_of_union([0, 0, 10, 10], []) == 0.0


@pytest.mark.parametrize("meta, pages, expected", [
    ({}, ["a_1"], {}),
    ({"bbox": [1, 2, 30, 40]}, ["a_1"], {"a_1": [[1, 2, 30, 40]]}),
    ({"evidence_box": [1, 2, 30, 40]}, ["a_1"], {"a_1": [[1, 2, 30, 40]]}),  # bench/questions
    ({"bbox": [[1, 2, 30, 40], [5, 5, 9, 9]]}, ["a_1"], {"a_1": [[1, 2, 30, 40], [5, 5, 9, 9]]}),
    ({"bbox": [[[1, 2, 30, 40]], [[5, 5, 9, 9], [0, 0, 1, 1]]]}, ["a_1", "a_2"], {"a_1": [[1, 2, 30, 40]], "a_2": [[5, 5, 9, 9], [0, 0, 1, 1]]}),
    ({"bbox": {"a_2": [5, 5, 9, 9]}}, ["a_1", "a_2"], {"a_2": [[5, 5, 9, 9]]}),
    ({"bbox": {"2": [[5, 5, 9, 9]]}, "reference_page": [1, 2]}, ["a_1", "a_2"], {"a_2": [[5, 5, 9, 9]]}),  # by page number
    ({"bbox": [{"page": 1, "bbox": [1, 1, 2, 2]}, {"page_id": "a_2", "box": [[3, 3, 4, 4]]}], "reference_page": [1, 2]},
     ["a_1", "a_2"], {"a_1": [[1, 1, 2, 2]], "a_2": [[3, 3, 4, 4]]}),
    ({"bbox": [1, 2, 30, 40], "evidence_box": [0, 0, 1, 1]}, ["a_1"], {"a_1": [[1, 2, 30, 40]]}),  # bbox first
])
def test_gold_boxes_shapes(meta, pages, expected):
    assert gold_boxes(meta, pages) == expected


@pytest.mark.parametrize("meta, pages, words", [
    ({"bbox": [1, 2, 30, 40]}, ["a_1", "a_2"], "gold pages, so the page of each box is unknown"),
    ({"bbox": [[1, 2, 30, 40], [1, 2, 30, 40]]}, ["a_1", "a_2"], "page of each box is unknown"),
    ({"bbox": [30, 2, 1, 40]}, ["a_1"], "x1 < x2"),
    ({"bbox": [-1, 2, 30, 40]}, ["a_1"], "not a box"),
    ({"bbox": [1, 2, 3]}, ["a_1"], "expected a box"),
    ({"bbox": "1,2,3,4"}, ["a_1"], "expected a box"),
    ({"bbox": {"b_9": [1, 2, 3, 4]}}, ["a_1"], "'b_9' is not one of the gold pages"),
    ({"bbox": [[[1, 2, 3, 4]]]}, ["a_1", "a_2"], "1 lists of boxes for 2 gold pages"),
    ({"bbox": [{"bbox": [1, 2, 3, 4]}]}, ["a_1"], "expected {'page'"),
])
def test_gold_boxes_refuses_what_it_cannot_place(meta, pages, words):
    with pytest.raises(GoldBoxError, match="meta_info.bbox") as e:
        gold_boxes(meta, pages)
    assert words in str(e.value)


PAGE = (1000, 800)  # shown at 708x566: sqrt(401408 / 800000) = 0.70835


def _episode(protocol: str, gold: dict, second_crop: list[float] | None = None) -> Trajectory:
    page = page_view("turn00-page.jpg", "p_1", "/index/p_1.jpg", PAGE)
    assert page.input_size == (708, 566)
    turns = [Turn(index=0, raw_text="", action="search", argument="q", shown_page_id="p_1", observation=page,
                  hits=[{"rank": 1, "score": 1.0, "page_id": "p_1"}])]
    region = [100.0, 100.0, 400.0, 300.0]  # the first crop's region of the page (page pixels)
    crop = region_view("turn01-crop.jpg", page, region)
    turns.append(Turn(index=1, raw_text="", action="bbox", argument="", bbox_model=[10, 10, 50, 50], bbox_page=region,
                      acted_on=page, observation=crop))
    if second_crop is not None:
        turns.append(Turn(index=2, raw_text="", action="bbox", argument="", bbox_model=second_crop, bbox_page=[0, 0, 1000, 800],
                          acted_on=crop, observation=region_view("turn02-crop.jpg", page, [0, 0, 1000, 800])))
    return Trajectory(question="q", policy={"name": "x"}, turns=turns, config={"protocol": protocol}, gold={"boxes": gold})


def test_a_crop_scores_the_models_box_on_the_page():
    # first crop: [10, 10, 50, 50] on the 708x566 page image = [14.12, 14.13, 70.62, 70.67] page pixels
    model_box = [10 * 1000 / 708, 10 * 800 / 566, 50 * 1000 / 708, 50 * 800 / 566]
    scores = grounding_scores(_episode("demo", {"p_1": [model_box]}))
    assert scores["grounding_iou"] == pytest.approx(1.0)
    assert scores["grounding_cover"] == 0.0  # the crop cut was [100, 100, 400, 300]: the gold box is not in it
    assert scores["crops"] == 1.0 and scores["crops_on_gold"] == 1.0
    assert grounding_scores(_episode("demo", {"p_2": [model_box]})) == {  # gold on another page: crops miss it
        "grounding_iou": 0.0, "grounding_cover": 0.0, "crops": 1.0, "crops_on_gold": 0.0}
    cover = grounding_scores(_episode("demo", {"p_1": [[150, 150, 250, 250], [900, 700, 1000, 800]]}))
    assert cover["grounding_cover"] == pytest.approx(0.5)  # one of two equal gold boxes inside the crop


def test_a_crop_of_a_crop_is_mapped_as_its_profile_crops():
    # the second bbox is written on the first crop (shown at its own input size), [20, 20, 60, 60]
    crop = region_view("c.jpg", page_view("p.jpg", "p_1", "/i.jpg", PAGE), [100.0, 100.0, 400.0, 300.0])
    w, h = crop.input_size
    in_the_crop = [100 + 20 * 300 / w, 100 + 20 * 200 / h, 100 + 60 * 300 / w, 100 + 60 * 200 / h]  # demo: inside the crop
    on_the_page = [20 * 1000 / w, 20 * 800 / h, 60 * 1000 / w, 60 * 800 / h]  # training: scaled onto the whole page
    for protocol, gold, other in (("demo", in_the_crop, on_the_page), ("training", on_the_page, in_the_crop)):
        assert grounding_scores(_episode(protocol, {"p_1": [gold]}, [20, 20, 60, 60]))["grounding_iou"] == pytest.approx(1.0)
        assert grounding_scores(_episode(protocol, {"p_1": [other]}, [20, 20, 60, 60]))["grounding_iou"] < 0.2


def test_no_gold_no_grounding_and_attention_share_is_averaged():
    traj = _episode("training", {})
    assert grounding_scores(traj) == {}
    traj.turns[0].scores["attention_gold_share"] = 0.2
    traj.turns[1].scores["attention_gold_share"] = 0.6
    assert grounding_scores(traj) == {"attention_gold_share": pytest.approx(0.4)}
    never_cropped = _episode("training", {"p_1": [[0, 0, 10, 10]]})
    never_cropped.turns = never_cropped.turns[:1]
    assert grounding_scores(never_cropped) == {"grounding_iou": 0.0, "grounding_cover": 0.0, "crops": 0.0, "crops_on_gold": 0.0}


def test_trajectory_gold_boxes_accepts_one_box_per_page():
    traj = Trajectory(question="q", policy={"name": "x"}, gold={"boxes": {"a": [1, 2, 3, 4], "b": [[0, 0, 1, 1]], "c": "junk"}})
    assert trajectory_gold_boxes(traj) == {"a": [[1, 2, 3, 4]], "b": [[0, 0, 1, 1]]}
