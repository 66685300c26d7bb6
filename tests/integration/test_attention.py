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
    compute_attention_maps,
    estimate_reforward,
    load_attention_maps,
    load_choice,
    load_reply_tokens,
    plan_reforward,
    stored_choices,
)
from agent.attention_request import MapRequest
from agent.policies.base import PolicyError
from agent.qwen_model import load_qwen_vl
from agent.trajectory import Trajectory
from support.tiny_vlm import TrajectoryBuilder, tiny_model_dir


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


def _force_onto(monkeypatch, column, head=None, rows=None, elsewhere=None):
    """Make captured query rows put all their attention on one key position.

    head: only that head does (the others look at `elsewhere`, default position 0, a text token);
    rows: only those query positions do (the others look at `elsewhere`).
    """
    def forced(query, key, positions, scaling):
        probs = torch.zeros(query.shape[0], positions.numel(), key.shape[-2])
        probs[:, :, 0 if elsewhere is None else elsewhere] = 1.0
        chosen = torch.ones(positions.numel(), dtype=torch.bool) if rows is None else torch.isin(positions, torch.as_tensor(rows))
        heads = slice(None) if head is None else slice(head, head + 1)
        probs[heads, chosen] = 0.0
        probs[heads, chosen, column] = 1.0
        return probs

    monkeypatch.setattr(agent.attention_hooks, "row_attention_probs", forced)




def test_forced_attention_lands_on_the_marked_page_pixels(loaded, marked_zoom, monkeypatch):
    folder, trajectory, point, plain_jpeg = marked_zoom
    last = trajectory.turns[2].observation
    token = _token_of_marker(loaded.processor, folder / last.file, plain_jpeg)
    plan = plan_reforward(trajectory, folder, loaded.processor, MapRequest(select="answer"))
    start, _ = plan.image_spans[2]
    _force_onto(monkeypatch, start + token)

    run = compute_attention_maps(folder, loaded, select="answer")
    by_file = {m.view.file: m for m in run.maps}
    crop2 = by_file[last.file]
    assert crop2.values.sum() == pytest.approx(1.0)
    assert by_file[trajectory.turns[0].observation.file].values.sum() == 0
    _assert_on_marker(crop2.values, crop2.extent, point)

    scores = Trajectory.load(folder).turns[3].scores
    assert scores["attention_image_mass"] == pytest.approx(1.0)
    assert scores["attention_gold_share"] == pytest.approx(1.0)  # the gold box surrounds the marker


def _assert_on_marker(values, extent, point):
    row, col = np.unravel_index(values.argmax(), values.shape)
    x1, y1, x2, y2 = am.cell_box(extent, values.shape, row, col)
    marker = 5  # half-size of the drawn square, page pixels: it may straddle two cells
    assert x1 - marker <= point[0] <= x2 + marker and y1 - marker <= point[1] <= y2 + marker
    assert (x2 - x1) < 40  # a cell of the zoomed crop is small in page pixels: the check is sharp


def test_forced_attention_of_one_token_and_one_head_lands_on_the_marker(loaded, marked_zoom, monkeypatch):
    """Only the step that wrote one chosen token, and only in one head, looks at the marker."""
    folder, trajectory, point, plain_jpeg = marked_zoom
    last = trajectory.turns[2].observation
    token = _token_of_marker(loaded.processor, folder / last.file, plain_jpeg)
    answer = MapRequest(select="answer")
    plan = plan_reforward(trajectory, folder, loaded.processor, answer)
    start, _ = plan.image_spans[2]
    pieces = plan.reply_tokens[3]
    k = next(i for i, (text, _, _) in enumerate(pieces) if text == "4")  # Qwen2 splits digits: "4", "2"
    assert trajectory.turns[3].raw_text[pieces[k][1]:pieces[k][2]] == pieces[k][0]
    one_token = MapRequest(select="token", turn=3, token=k)
    row = plan_reforward(trajectory, folder, loaded.processor, one_token).rows[0]
    assert row.size == 1
    _force_onto(monkeypatch, start + token, head=2, rows=row)

    # that token, that head: all its attention is on the marker, through two crops
    run = compute_attention_maps(folder, loaded, MapRequest(select="token", turn=3, token=k, head=2))
    crop2 = {m.view.file: m for m in run.maps}[last.file]
    assert crop2.values.sum() == pytest.approx(1.0)
    _assert_on_marker(crop2.values, crop2.extent, point)
    assert run.scores[3]["attention_gold_share"] == pytest.approx(1.0)
    # the same token, another head: it looked at text only
    other = compute_attention_maps(folder, loaded, MapRequest(select="token", turn=3, token=k, head=1))
    assert sum(m.values.sum() for m in other.maps) == 0
    # every head apart: head 2 is the marker, the rest empty; the combined mean is a quarter
    grid = {m.view.file: m for m in compute_attention_maps(folder, loaded, MapRequest(select="token", turn=3, token=k, per_head=True)).maps}[last.file]
    assert grid.values.shape[0] == 4 and grid.values[2].sum() == pytest.approx(1.0) and grid.values[[0, 1, 3]].sum() == 0
    _assert_on_marker(grid.values[2], grid.extent, point)
    mean = {m.view.file: m for m in compute_attention_maps(folder, loaded, MapRequest(select="token", turn=3, token=k)).maps}[last.file]
    assert mean.values.sum() == pytest.approx(0.25)
    # the whole answer's other tokens did not look at the marker: their mean dilutes it
    group = {m.view.file: m for m in compute_attention_maps(folder, loaded, MapRequest(select="reply", head=2)).maps if m.turn == 3}[last.file]
    assert 0 < group.values.sum() < 0.5


def test_sink_correction_removes_what_the_content_free_rows_look_at(loaded, marked_zoom, monkeypatch):
    """The rows after each image (chat-template tokens) put everything on one 'sink' token; the
    answer's rows split between that sink and the marker. Dropping or subtracting the baseline
    leaves the marker."""
    folder, trajectory, point, plain_jpeg = marked_zoom
    last = trajectory.turns[2].observation
    marker = _token_of_marker(loaded.processor, folder / last.file, plain_jpeg)
    plan = plan_reforward(trajectory, folder, loaded.processor, MapRequest(select="answer", sink="drop"))
    start, _ = plan.image_spans[2]
    baseline_rows = torch.as_tensor(np.concatenate(plan.baseline_rows))
    answer_rows = torch.as_tensor(plan.rows[plan.turns.index(3)])
    assert all(r.size >= 3 for r in plan.baseline_rows)  # <|vision_end|><|im_end|>\n<|im_start|>assistant at least
    sink = start  # the crop's top-left token

    def forced(query, key, positions, scaling):
        probs = torch.zeros(query.shape[0], positions.numel(), key.shape[-2])
        probs[:, :, 0] = 1.0
        base, ans = torch.isin(positions, baseline_rows), torch.isin(positions, answer_rows)
        probs[:, base | ans, 0] = 0.0
        probs[:, base, sink] = 1.0
        probs[:, ans, sink] = 0.5
        probs[:, ans, start + marker] = 0.5
        return probs

    monkeypatch.setattr(agent.attention_hooks, "row_attention_probs", forced)
    crop = {}
    for mode in ("none", "drop", "baseline"):
        run = compute_attention_maps(folder, loaded, MapRequest(select="answer", sink=mode))
        crop[mode] = next(m.values for m in run.maps if m.turn == 3 and m.view.file == last.file)
        record = json.loads((folder / f"attention-{run.key}.json").read_text())
        assert record["sink"] == mode and ("sink" in record["description"]) == (mode != "none")
    assert crop["none"].flat[0] == pytest.approx(0.5) and crop["none"].sum() == pytest.approx(1.0)
    assert crop["drop"].flat[0] == 0 and crop["drop"].sum() == pytest.approx(1.0)  # the sink's mass shared out
    assert crop["drop"].flat[marker] == pytest.approx(1.0)
    assert crop["baseline"].flat[0] == 0 and crop["baseline"].flat[marker] == pytest.approx(0.5)
    _assert_on_marker(crop["drop"], last.region, point)
    assert run.key == "answer_Lall_mean_sink-baseline"
    assert "attention_image_mass" not in run.scores[3]  # not a probability any more after subtraction
    assert json.loads((folder / "attention-answer_Lall_mean_sink-drop.json").read_text())["sink_cells"][last.file] == 1


def test_bbox_share_is_one_inside_the_chosen_crop_and_zero_outside(loaded, marked_zoom, monkeypatch):
    folder, trajectory, _, _ = marked_zoom
    turn = trajectory.turns[1]  # the first bbox, acting on the whole page
    plan = plan_reforward(trajectory, folder, loaded.processor, MapRequest(select="bbox"))
    start, end = plan.image_spans[0]
    shape = am.token_grid(np.zeros(end - start), plan.grids[0]).shape
    inside = am.cell_at(turn.acted_on.region, shape, (turn.bbox_page[0] + turn.bbox_page[2]) / 2, (turn.bbox_page[1] + turn.bbox_page[3]) / 2)
    for (row, col), expected in ((inside, 1.0), ((0, 0), 0.0)):
        _force_onto(monkeypatch, start + row * shape[1] + col)
        compute_attention_maps(folder, loaded, select="bbox")
        assert Trajectory.load(folder).turns[1].scores["attention_bbox_share"] == pytest.approx(expected)
    gold = Trajectory.load(folder).turns[1].scores["attention_gold_share"]
    assert gold == pytest.approx(0.0)  # the top-left cell is far from the gold box


def test_each_choice_is_stored_apart_and_the_last_full_one_is_current(loaded, demo_corpus, tmp_path):
    b = TrajectoryBuilder("q", {"s": demo_corpus / "slide_5_1024.jpg"})
    b.search("s"); b.bbox([100, 100, 400, 300]); b.answer("ok")
    b.trajectory.policy = {"name": "vllm", "model": "Qwen/Qwen2.5-VL-7B-Instruct"}  # replies came from a server
    folder = b.save(tmp_path / "t")
    first = compute_attention_maps(folder, loaded, select="reply", reduce="max")
    assert first.key == "reply_Lall_max"
    saved = Trajectory.load(folder)
    assert saved.turns[1].maps == {"attention:turn00-page.jpg": "attention-reply_Lall_max-turn01-turn00-page.npy"}
    assert set(saved.turns[2].maps) == {"attention:turn00-page.jpg", "attention:turn01-crop.jpg"}
    assert "attention_image_mass" not in saved.turns[2].scores  # only meaningful for reduce="mean"
    current = json.loads((folder / "attention.json").read_text())
    assert current["settings"] == MapRequest(select="reply", reduce="max").to_dict() and current["tokens"] > 0

    second = compute_attention_maps(folder, loaded, select="answer", layers=(1, 1))
    saved = Trajectory.load(folder)
    assert saved.turns[1].maps == {} and saved.turns[1].scores == {}  # the current choice is the answer's
    maps = load_attention_maps(folder, saved, turn=2)
    assert [m.view.file for m in maps] == ["turn00-page.jpg", "turn01-crop.jpg"]
    assert maps[1].extent == tuple(saved.turns[1].observation.region)
    assert 0 < saved.turns[2].scores["attention_image_mass"] <= 1.0
    assert json.loads((folder / "attention.json").read_text())["settings"]["layers"] == [1, 1]

    # a per-head grid and a single token are stored as choices, and never become "current"
    grid = compute_attention_maps(folder, loaded, MapRequest(select="answer", layers=(0, 0), per_head=True))
    token = compute_attention_maps(folder, loaded, MapRequest(select="token", turn=1, token=0))
    assert Trajectory.load(folder).turns[2].maps == saved.turns[2].maps
    assert token.tokens < first.tokens  # one turn: the pass ends at its reply
    assert sorted(r["key"] for r in stored_choices(folder)) == sorted([first.key, second.key, grid.key, token.key])
    assert {p.name for p in folder.glob("attention-turn*.npy")} == set()

    # switching back is a file read, and gives the very arrays computed
    for run in (first, grid, token):
        back = load_choice(folder, saved, run.request)
        assert back is not None and back.request == run.request
        assert [(m.turn, m.view.file) for m in back.maps] == [(m.turn, m.view.file) for m in run.maps]
        assert all(np.array_equal(a.values, c.values) for a, c in zip(back.maps, run.maps))
        assert back.scores == run.scores
    grid_maps = load_choice(folder, saved, grid.key, turn=2).maps
    assert all(m.values.ndim == 3 and m.values.shape[0] == 4 for m in grid_maps)
    assert len(load_choice(folder, saved, grid.key, turn=2).scores[2]["attention_image_mass"]) == 4  # one per head
    assert load_choice(folder, saved, MapRequest(select="search")) is None  # never computed

    # the reply tokens are stored too, as offsets into each reply
    tokens = load_reply_tokens(folder)
    assert "".join(text for text, _, _ in tokens[2]) == saved.turns[2].raw_text
    assert all(saved.turns[2].raw_text[a:b] == text for text, a, b in tokens[2])


def test_stored_names_outside_the_folder_are_never_read(loaded, demo_corpus, tmp_path):
    b = TrajectoryBuilder("q", {"s": demo_corpus / "slide_5_1024.jpg"})
    b.search("s"); b.answer("ok")
    folder = b.save(tmp_path / "t")
    run = compute_attention_maps(folder, loaded, select="answer")
    np.save(tmp_path / "attention-answer_Lall_mean-turn01-turn00-page.npy", np.ones((3, 3), np.float32))  # a decoy outside
    record = json.loads((folder / "attention-answer_Lall_mean.json").read_text())
    record["turns"]["1"]["maps"]["turn00-page.jpg"] = "../attention-answer_Lall_mean-turn01-turn00-page.npy"
    (folder / "attention-answer_Lall_mean.json").write_text(json.dumps(record))
    assert load_choice(folder, run.trajectory, run.request).maps == []
    saved = Trajectory.load(folder)
    saved.turns[1].maps["attention:turn00-page.jpg"] = str(tmp_path / "attention-answer_Lall_mean-turn01-turn00-page.npy")
    assert load_attention_maps(folder, saved) == []


@pytest.mark.parametrize(
    "select, turn, text",
    [("answer", 3, "4.2 billion"), ("bbox", 1, "[40, 60, 500, 400]"), ("action", 2, "cloud pricing"), ("search", 2, "cloud pricing")],
)
def test_selected_rows_are_the_steps_that_wrote_the_text(loaded, demo_corpus, tmp_path, select, turn, text):
    b = TrajectoryBuilder("q", {"s": demo_corpus / "slide_6_1024.jpg", "t": demo_corpus / "slide_7_1024.jpg"})
    b.search("s"); b.bbox([40, 60, 500, 400]); b.search("t", query="cloud pricing"); b.answer("4.2 billion")
    folder = b.save(tmp_path / "t")
    plan = plan_reforward(b.trajectory, folder, loaded.processor, MapRequest(select=select))
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


def test_a_training_profile_trajectory_is_rerun_as_the_model_saw_it(loaded, demo_corpus, tmp_path):
    """Under the training profile each reply goes back to the model as its tags only; the re-run must
    find those replies in the chat (not the recorded text, which holds words outside the tags), and the
    reply tokens must still point into the recorded reply."""
    from agent.conversation import sent_reply

    b = TrajectoryBuilder("q", {"s": demo_corpus / "slide_8_1024.jpg"})
    b.search("s"); b.bbox([50, 50, 500, 400]); b.answer("12 yuan")
    b.trajectory.config["protocol"] = "training"
    for turn in b.trajectory.turns:  # words outside the tags, as models write them
        turn.raw_text = "Let me see. " + turn.raw_text.replace("</think>\n", "</think> then ") + " Done."
    folder = b.save(tmp_path / "t")
    run = compute_attention_maps(folder, loaded, select="answer")
    assert {m.turn for m in run.maps} == {2} and all(m.values.sum() > 0 for m in run.maps)
    saved = Trajectory.load(folder)
    for turn in saved.turns:
        pieces = load_reply_tokens(folder)[turn.index]
        assert "".join(text for text, _, _ in pieces) == sent_reply(turn.raw_text, "tags")  # what the model saw
        inside = [(text, a, c) for text, a, c in pieces if c > a]
        assert inside and all(turn.raw_text[a:c] == text for text, a, c in inside if "\n" not in text)
        assert "Let me see" not in "".join(text for text, _, _ in pieces)
