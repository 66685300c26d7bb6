"""The row-attention hooks reproduce eager attention exactly, for chosen rows, layers and heads only."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from agent.attention import plan_reforward
from agent.attention_hooks import RowAttentionRecorder, layer_progress, run_until_stop
from agent.attention_request import MapRequest
from agent.qwen_model import load_qwen_vl
from support.tiny_vlm import TrajectoryBuilder, tiny_model_dir

LAYERS = 3


@pytest.fixture(scope="module")
def model_dir():
    return tiny_model_dir(num_layers=LAYERS)


@pytest.fixture(scope="module")
def eager(model_dir):
    return load_qwen_vl(model_dir, attn_implementation="eager")


@pytest.fixture(scope="module")
def plan(eager, demo_corpus, tmp_path_factory):
    b = TrajectoryBuilder("What was revenue?", {"s": demo_corpus / "slide_2_1024.jpg", "a": demo_corpus / "aliyun4_2.jpg"})
    b.search("s")
    b.bbox([40, 60, 500, 400])
    b.search("a")
    b.answer("4.2 billion dollars")
    folder = b.save(tmp_path_factory.mktemp("traj") / "t")
    return plan_reforward(b.trajectory, folder, eager.processor, MapRequest(select="reply"))


def _columns(plan):
    return np.concatenate([np.arange(s, e) for s, e in plan.image_spans])


@pytest.fixture(scope="module")
def full_attentions(eager, plan):
    """Eager's full attention tensors of every layer (the memory-hungry way), computed once."""
    with torch.inference_mode():
        out = eager.model.model(**plan.inputs, output_attentions=True, use_cache=False)
    return [a[0].float().numpy() for a in out.attentions]


def _reference(attentions, plan, layers, reduce, heads=None):
    """The captured quantity, computed from full attention tensors with numpy."""
    columns = _columns(plan)
    result = []
    for rows in plan.rows:
        per_layer = []
        for layer in layers:
            probs = attentions[layer][:, rows][:, :, columns]  # (heads, rows, C)
            if heads is None:
                per_layer.append((probs.mean(0) if reduce == "mean" else probs.max(0)).mean(0))
            elif heads == "each":
                per_layer.append(probs.mean(1))  # (heads, C)
            else:
                per_layer.append(probs[heads].mean(0))
        result.append(np.mean(per_layer, 0) if reduce == "mean" else np.max(per_layer, 0))
    return np.stack(result)


def _record(loaded, plan, layers, reduce, max_elements=1 << 24, heads=None):
    recorder = RowAttentionRecorder(layers, plan.rows, _columns(plan), reduce=reduce, max_elements=max_elements, heads=heads)
    with torch.inference_mode(), recorder.attached(loaded.model.model.language_model.layers):
        run_until_stop(loaded.model.model, **plan.inputs, use_cache=False)
    return recorder.result()


@pytest.mark.parametrize("layers, reduce", [([0, 1, 2], "mean"), ([0, 1, 2], "max"), ([1], "mean"), ([0, 1], "max")])
def test_rows_match_eager_output_attentions(eager, plan, full_attentions, layers, reduce):
    expected = _reference(full_attentions, plan, layers, reduce)
    got = _record(eager, plan, layers, reduce)
    assert got.shape == (len(plan.rows), _columns(plan).size)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-7)
    assert expected.max() > 0  # the rows really attend to images


@pytest.mark.parametrize("layers, reduce, heads", [([1], "mean", 3), ([0, 2], "max", 0), ([2], "mean", "each"), ([0, 1, 2], "max", "each")])
def test_one_head_and_every_head_apart_match_eager(eager, plan, full_attentions, layers, reduce, heads):
    expected = _reference(full_attentions, plan, layers, reduce, heads)
    got = _record(eager, plan, layers, reduce, heads=heads)
    assert got.shape == ((len(plan.rows), 4, _columns(plan).size) if heads == "each" else (len(plan.rows), _columns(plan).size))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-7)
    if heads == "each" and reduce == "mean":  # the mean of the heads kept apart is the combined map
        np.testing.assert_allclose(got.mean(1), _record(eager, plan, layers, "mean"), rtol=1e-5, atol=1e-8)


def test_layer_progress_reports_every_layer_up_to_the_last_chosen(eager, plan):
    seen = []
    layers = eager.model.model.language_model.layers
    with layer_progress(layers, 1, lambda layer, total: seen.append((layer, total))):
        _record(eager, plan, [1], "mean")
    assert seen == [(0, 2), (1, 2)]

    class Cancelled(Exception):
        pass

    def cancel(layer, total):
        raise Cancelled

    recorder = RowAttentionRecorder([2], plan.rows, _columns(plan))
    with pytest.raises(Cancelled), torch.inference_mode(), recorder.attached(layers), layer_progress(layers, 2, cancel):
        run_until_stop(eager.model.model, **plan.inputs, use_cache=False)
    assert recorder.layers_seen == []  # cancelled before any capture
    assert all(len(layer._forward_pre_hooks) == 0 for layer in layers)


def test_sdpa_forward_gives_the_same_rows(model_dir, plan, full_attentions):
    sdpa = load_qwen_vl(model_dir, attn_implementation="sdpa")
    np.testing.assert_allclose(_record(sdpa, plan, [0, 2], "mean"), _reference(full_attentions, plan, [0, 2], "mean"), rtol=1e-4, atol=1e-7)


def test_row_chunking_does_not_change_the_result(eager, plan):
    tiny_chunks = 4 * int(plan.inputs["input_ids"].shape[1]) * 3  # 3 rows per chunk with 4 heads
    np.testing.assert_allclose(_record(eager, plan, [1], "max", max_elements=tiny_chunks), _record(eager, plan, [1], "max"), rtol=1e-6)


def test_forward_stops_after_the_last_chosen_layer(eager, plan):
    layers = eager.model.model.language_model.layers
    hooks_before = [(len(layer.self_attn._forward_pre_hooks), len(layer._forward_hooks)) for layer in layers]
    reached = []
    handles = [layer.register_forward_pre_hook(lambda m, a, i=i: reached.append(i)) for i, layer in enumerate(eager.model.model.language_model.layers)]
    try:
        _record(eager, plan, [0, 1], "mean")
    finally:
        for h in handles:
            h.remove()
    assert reached == [0, 1]
    # and the recorder's hooks are gone afterwards (transformers keeps its own output-capturing ones)
    assert [(len(layer.self_attn._forward_pre_hooks), len(layer._forward_hooks)) for layer in layers] == hooks_before


def test_bad_settings_are_refused(eager, plan):
    with pytest.raises(ValueError, match="outside the model's 3 layers"):
        _record(eager, plan, [1, 3], "mean")
    with pytest.raises(ValueError, match="reduce must be one of"):
        RowAttentionRecorder([0], plan.rows, _columns(plan), reduce="median")
    with pytest.raises(ValueError, match="must satisfy 0 <= first <= last < 3"):
        MapRequest(layers=(1, 3)).layer_list(3)
    with pytest.raises(ValueError, match="must satisfy 0 <= first <= last"):
        MapRequest(layers=(2, 1))
    with pytest.raises(ValueError, match="outside layer 0's 4 attention heads"):
        _record(eager, plan, [0], "mean", heads=4)
    with pytest.raises(ValueError, match="heads must be None, a head index or 'each'"):
        RowAttentionRecorder([0], plan.rows, _columns(plan), heads="all")
