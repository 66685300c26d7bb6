"""Attention maps of whole trajectories on the tiny random Qwen2.5-VL (agent/attention.py).

The maps' values are meaningless with random weights; what is checked is everything around them:
shapes against the processor's own image grid, where a token lands in page pixels (checked against
the processor's patch order by drawing a marker on the page), the region scores, storage, and the
choice of tokens.
"""
from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

import agent.attention_hooks
from agent import attention_maps as am
from agent.attention import (
    AttentionSettings,
    compute_attention_maps,
    estimate_reforward,
    load_attention_maps,
    plan_reforward,
)
from agent.policies.base import PolicyError
from agent.qwen_model import load_qwen_vl
from agent.trajectory import Trajectory
from tiny_vlm import TrajectoryBuilder, tiny_model_dir


@pytest.fixture(scope="module")
def loaded():
    return load_qwen_vl(tiny_model_dir())


def _page(path, size, seed):
    """A synthetic page with some structure (boxes and lines) at a given size."""
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", size, (245, 245, 240))
    draw = ImageDraw.Draw(image)
    w, h = size
    for _ in range(12):
        x, y = rng.integers(0, w - 10), rng.integers(0, h - 10)
        draw.rectangle([x, y, x + rng.integers(5, w // 3 + 6), y + rng.integers(5, h // 8 + 6)], outline=(20, 20, 90), width=3)
    image.save(path)
    return path


def _grid_of_jpeg(processor, path):
    """(rows, cols) of visual tokens the processor makes of an image file, computed independently."""
    out = processor.image_processor(images=[Image.open(path).convert("RGB")], return_tensors="np")
    _, h, w = out["image_grid_thw"][0]
    return h // 2, w // 2


def test_map_shapes_follow_the_image_grid_for_pages_and_crops(loaded, demo_corpus, tmp_path):
    pages = {
        "portrait": _page(tmp_path / "portrait.png", (1240, 1754), 1),
        "tall": _page(tmp_path / "tall.png", (600, 2400), 2),
        "wide": _page(tmp_path / "wide.png", (3000, 500), 3),
        "small": _page(tmp_path / "small.png", (300, 200), 4),  # upscaled to the minimum pixels
        "slide": demo_corpus / "slide_4_1024.jpg",
        "aliyun": demo_corpus / "aliyun4_3.jpg",
    }
    b = TrajectoryBuilder("q", pages)
    b.search("portrait"); b.bbox([100, 100, 300, 500])
    b.search("tall"); b.search("wide"); b.bbox([20, 10, 900, 150])
    b.search("small"); b.search("slide")
    b.search("aliyun"); b.bbox([100, 50, 600, 400]); b.bbox([50, 50, 300, 250])
    b.answer("x")
    folder = b.save(tmp_path / "t")
    run = compute_attention_maps(folder, loaded, select="answer", layers=(0, 0))
    views = [t.observation for t in b.trajectory.turns if t.observation is not None]
    assert [m.view.file for m in run.maps] == [v.file for v in views]  # one map per image in context
    seen_shapes = set()
    for m in run.maps:
        assert m.values.shape == _grid_of_jpeg(loaded.processor, folder / m.view.file)
        assert m.values.dtype == np.float32 and np.all(m.values >= 0)
        assert m.extent == tuple(m.view.region)
        seen_shapes.add(m.values.shape)
    assert len(seen_shapes) >= 6  # the aspect ratios really differ
    assert run.skipped == {i: "the reply has no answer text" for i in range(1, 10)} | {0: "no image in context yet"}


@pytest.fixture()
def marked_zoom(demo_corpus, tmp_path):
    """A page with a small marker at a known page point, shown then cropped twice around it.

    Returns (folder, trajectory, point, index of the visual token of the last crop that holds the
    marker according to the processor's own patch order).
    """
    point = (2100, 1300)
    original = Image.open(demo_corpus / "aliyun4_3.jpg").convert("RGB")
    marked = original.copy()
    ImageDraw.Draw(marked).rectangle([point[0] - 5, point[1] - 5, point[0] + 5, point[1] + 5], fill=(0, 0, 0))
    marked.save(tmp_path / "marked.png")
    original.save(tmp_path / "original.png")

    def build(page_file, name):
        b = TrajectoryBuilder("q", {"p": page_file}, gold={"boxes": {"p": [1950, 1150, 2250, 1450]}})
        b.search("p")
        b.bbox([250, 150, 420, 260])
        b.bbox([330, 230, 420, 300])
        b.answer("42")
        return b.save(tmp_path / name), b.trajectory

    folder, trajectory = build(tmp_path / "marked.png", "marked")
    plain, _ = build(tmp_path / "original.png", "plain")
    last = trajectory.turns[2].observation
    assert last.region[0] < point[0] < last.region[2] and last.region[1] < point[1] < last.region[3]
    return folder, trajectory, point, plain / last.file


def _token_of_marker(processor, marked_jpeg, plain_jpeg):
    a, b = (processor.image_processor(images=[Image.open(p).convert("RGB")], return_tensors="np")["pixel_values"] for p in (marked_jpeg, plain_jpeg))
    change = np.abs(a - b).sum(axis=1).reshape(-1, 4).sum(axis=1)  # 4 consecutive patches form one token
    return int(change.argmax())


def _force_onto(monkeypatch, column):
    """Make every captured query row put all its attention on one key position."""
    def forced(query, key, positions, scaling):
        probs = torch.zeros(query.shape[0], positions.numel(), key.shape[-2])
        probs[:, :, column] = 1.0
        return probs

    monkeypatch.setattr(agent.attention_hooks, "row_attention_probs", forced)


def test_forced_attention_lands_on_the_marked_page_pixels(loaded, marked_zoom, monkeypatch):
    folder, trajectory, point, plain_jpeg = marked_zoom
    last = trajectory.turns[2].observation
    token = _token_of_marker(loaded.processor, folder / last.file, plain_jpeg)
    plan = plan_reforward(trajectory, folder, loaded.processor, AttentionSettings(select="answer"))
    start, _ = plan.image_spans[2]
    _force_onto(monkeypatch, start + token)

    run = compute_attention_maps(folder, loaded, select="answer")
    by_file = {m.view.file: m for m in run.maps}
    crop2 = by_file[last.file]
    assert crop2.values.sum() == pytest.approx(1.0)
    assert by_file[trajectory.turns[0].observation.file].values.sum() == 0
    row, col = np.unravel_index(crop2.values.argmax(), crop2.values.shape)
    x1, y1, x2, y2 = am.cell_box(crop2.extent, crop2.values.shape, row, col)
    marker = 5  # half-size of the drawn square, page pixels: it may straddle two cells
    assert x1 - marker <= point[0] <= x2 + marker and y1 - marker <= point[1] <= y2 + marker
    assert (x2 - x1) < 40  # a cell of the zoomed crop is small in page pixels: the check is sharp

    scores = Trajectory.load(folder).turns[3].scores
    assert scores["attention_image_mass"] == pytest.approx(1.0)
    assert scores["attention_gold_share"] == pytest.approx(1.0)  # the gold box surrounds the marker


def test_bbox_share_is_one_inside_the_chosen_crop_and_zero_outside(loaded, marked_zoom, monkeypatch):
    folder, trajectory, _, _ = marked_zoom
    turn = trajectory.turns[1]  # the first bbox, acting on the whole page
    plan = plan_reforward(trajectory, folder, loaded.processor, AttentionSettings(select="bbox"))
    start, end = plan.image_spans[0]
    shape = am.token_grid(np.zeros(end - start), plan.grids[0]).shape
    inside = am.cell_at(turn.acted_on.region, shape, (turn.bbox_page[0] + turn.bbox_page[2]) / 2, (turn.bbox_page[1] + turn.bbox_page[3]) / 2)
    for (row, col), expected in ((inside, 1.0), ((0, 0), 0.0)):
        _force_onto(monkeypatch, start + row * shape[1] + col)
        compute_attention_maps(folder, loaded, select="bbox")
        assert Trajectory.load(folder).turns[1].scores["attention_bbox_share"] == pytest.approx(expected)
    gold = Trajectory.load(folder).turns[1].scores["attention_gold_share"]
    assert gold == pytest.approx(0.0)  # the top-left cell is far from the gold box


def test_maps_are_stored_with_the_trajectory_and_replaced_on_rerun(loaded, demo_corpus, tmp_path):
    b = TrajectoryBuilder("q", {"s": demo_corpus / "slide_5_1024.jpg"})
    b.search("s"); b.bbox([100, 100, 400, 300]); b.answer("ok")
    b.trajectory.policy = {"name": "vllm", "model": "Qwen/Qwen2.5-VL-7B-Instruct"}  # replies came from a server
    folder = b.save(tmp_path / "t")
    compute_attention_maps(folder, loaded, select="reply", reduce="max")
    saved = Trajectory.load(folder)
    assert saved.turns[1].maps == {"attention:turn00-page.jpg": "attention-turn01-turn00-page.npy"}
    assert set(saved.turns[2].maps) == {"attention:turn00-page.jpg", "attention:turn01-crop.jpg"}
    assert "attention_image_mass" not in saved.turns[2].scores  # only meaningful for reduce="mean"
    settings = json.loads((folder / "attention.json").read_text())
    assert settings["settings"] == {"select": "reply", "layers": None, "reduce": "max"} and settings["tokens"] > 0

    compute_attention_maps(folder, loaded, select="answer", layers=(1, 1))
    saved = Trajectory.load(folder)
    assert saved.turns[1].maps == {} and saved.turns[1].scores == {}
    assert sorted(p.name for p in folder.glob("attention-*.npy")) == ["attention-turn02-turn00-page.npy", "attention-turn02-turn01-crop.npy"]
    maps = load_attention_maps(folder, saved, turn=2)
    assert [m.view.file for m in maps] == ["turn00-page.jpg", "turn01-crop.jpg"]
    assert maps[1].extent == tuple(saved.turns[1].observation.region)
    assert 0 < saved.turns[2].scores["attention_image_mass"] <= 1.0
    assert json.loads((folder / "attention.json").read_text())["settings"]["layers"] == [1, 1]


@pytest.mark.parametrize(
    "select, turn, text",
    [("answer", 3, "4.2 billion"), ("bbox", 1, "[40, 60, 500, 400]"), ("action", 2, "cloud pricing"), ("search", 2, "cloud pricing")],
)
def test_selected_rows_are_the_steps_that_wrote_the_text(loaded, demo_corpus, tmp_path, select, turn, text):
    b = TrajectoryBuilder("q", {"s": demo_corpus / "slide_6_1024.jpg", "t": demo_corpus / "slide_7_1024.jpg"})
    b.search("s"); b.bbox([40, 60, 500, 400]); b.search("t", query="cloud pricing"); b.answer("4.2 billion")
    folder = b.save(tmp_path / "t")
    plan = plan_reforward(b.trajectory, folder, loaded.processor, AttentionSettings(select=select))
    assert turn in plan.turns
    rows = plan.rows[plan.turns.index(turn)]
    ids = plan.inputs["input_ids"][0].numpy()
    decoded = loaded.processor.tokenizer.decode(ids[rows + 1])  # row p produced token p+1
    # BPE may merge a tag's edge into the first/last token (">[" and "]</" are single tokens):
    # such straddling tokens are kept, so the decoded tokens hold the text plus at most those edges.
    assert text in decoded and len(decoded) <= len(text) + 4, decoded
    assert plan.context[plan.turns.index(turn)] == sum(1 for t in b.trajectory.turns[:turn] if t.observation)


def test_absent_weights_raise_a_clear_error_fast(demo_corpus, tmp_path):
    b = TrajectoryBuilder("q", {"s": demo_corpus / "slide_5_1024.jpg"})
    b.search("s"); b.answer("ok")
    folder = b.save(tmp_path / "t")
    started = time.perf_counter()
    with pytest.raises(PolicyError, match="huggingface-cli download autumncc/Qwen2.5-VL-7B-VRAG"):
        compute_attention_maps(folder, "autumncc/Qwen2.5-VL-7B-VRAG")
    assert time.perf_counter() - started < 5
    with pytest.raises(ValueError, match="layers"):
        compute_attention_maps(folder, load_qwen_vl(tiny_model_dir()), layers=(0, 9))


def test_estimate_grows_with_images_and_is_plausible_for_7b(loaded, demo_corpus, tmp_path):
    b = TrajectoryBuilder("q", {f"s{i}": demo_corpus / f"slide_{i}_1024.jpg" for i in range(1, 5)})
    estimates = []
    for i in range(1, 5):
        b.search(f"s{i}")
        b.trajectory.turns.append(b.trajectory.turns[-1].__class__(index=len(b.trajectory.turns), raw_text="<think>x</think><answer>y</answer>", action="answer"))
        estimates.append(estimate_reforward(b.trajectory, loaded, flops_per_second=1e11))
        b.trajectory.turns.pop()
    assert [e.images for e in estimates] == [1, 2, 3, 4]
    assert all(a.seconds < b.seconds for a, b in zip(estimates, estimates[1:]))
    assert all(e.load_seconds == 0 for e in estimates)  # already loaded
    assert 0 < estimates[0].seconds < 30 and "forward" in estimates[0].summary()

    # the released 7B model's config, without weights: minutes on a CPU, not milliseconds or days
    big = tmp_path / "Qwen2.5-VL-7B-VRAG"
    big.mkdir()
    (big / "config.json").write_text(json.dumps({
        "model_type": "qwen2_5_vl", "torch_dtype": "bfloat16",
        "text_config": {"hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28, "num_attention_heads": 28, "num_key_value_heads": 4},
        "vision_config": {"hidden_size": 1280, "intermediate_size": 3420, "depth": 32},
    }))
    (big / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": 16_580_000_000}}))
    estimate = estimate_reforward(b.trajectory, big, flops_per_second=1e11)
    assert estimate.layers_run == 28 and estimate.load_seconds > 40
    assert 60 < estimate.forward_seconds < 3600
    assert estimate_reforward(b.trajectory, big, layers=(0, 13), flops_per_second=1e11).forward_seconds < estimate.forward_seconds
