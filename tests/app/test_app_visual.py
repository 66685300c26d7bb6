"""The relevance layer of a run over a late-interaction index (tiny random ColQwen2): the visual
similarity map of the hit, with a query-token picker, drawn on the page in the Trajectories view."""
from __future__ import annotations

import base64
import json
import shutil

import numpy as np
import pytest

from support.app_support import app, clean_env, data_root, texts, unescape_md  # noqa: F401 (fixtures)
from support.tiny_visual import tiny_colqwen2_dir

pytestmark = pytest.mark.slow
QUERY = "Elastic Compute Service"


@pytest.fixture
def visual_run(data_root, demo_corpus, tmp_path):
    """A visual index "visual" in the data root and one saved run that searched it."""
    from agent.loop import AgentConfig, new_trajectory, run_to_end
    from agent.policies import make_policy
    from agent.search import LocalSearcher
    from agent.trajectory import TrajectoryStore
    from search_engine import DocumentIndex
    from search_engine.config import IndexConfig
    from support.fake_openai_server import FakeOpenAIServer

    corpus = tmp_path / "pages"
    corpus.mkdir()
    for name in ("aliyun4_1.jpg", "slide_4_1024.jpg"):
        shutil.copy(demo_corpus / name, corpus / name)
    folder = data_root / "indexes" / "visual"
    index = DocumentIndex.open(folder, config=IndexConfig(embedder="colqwen2", workers=0,
                                                          model_path=str(tiny_colqwen2_dir(tmp_path))))
    index.ingest([corpus])
    script = [f"<think>Look.</think><search>{QUERY}</search>", "<think>Done.</think><answer>ECS</answer>"]
    with FakeOpenAIServer(script) as server:
        policy = make_policy("vllm", base_url=server.base_url)
        config = AgentConfig(max_turns=4)
        trajectory = run_to_end(new_trajectory(QUERY, policy, config, index="visual"), policy, LocalSearcher(index), config)
    TrajectoryStore(data_root / "trajectories").save(trajectory)
    return trajectory, index


def _heatmaps(at) -> list[dict]:
    return [t for c in at.get("plotly_chart") for t in json.loads(c.proto.spec)["data"] if t["type"] == "heatmap"]


def _z(heat: dict) -> np.ndarray:
    """The heatmap's values as sent to the browser (plotly's typed-array encoding)."""
    z = heat["z"]
    if not isinstance(z, dict):
        return np.asarray(z, float)
    shape = tuple(int(v) for v in str(z["shape"]).split(","))  # "rows, cols"
    return np.frombuffer(base64.b64decode(z["bdata"]), dtype=z["dtype"]).reshape(shape)


def test_the_relevance_layer_is_the_visual_similarity_map_with_a_token_picker(visual_run):
    from search_engine.similarity_maps import page_similarities, similarity_map

    trajectory, index = visual_run
    at = app()
    at.query_params["id"] = trajectory.id
    at.query_params["turn"] = "1"
    at.switch_page("pages/trajectories.py").run()
    assert not at.exception, at.exception
    layers = at.button_group(key="turn_layers")
    layers.set_value(list(layers.value) + ["relevance"]).run()
    assert not at.exception, at.exception
    [heat] = _heatmaps(at)
    assert heat["name"] == "visual similarity"
    page_id = trajectory.turns[0].shown_page_id
    expected = page_similarities(index.embedder, index.page_image(page_id), QUERY)
    page = index.page(page_id)
    rows, cols = expected.grid
    assert _z(heat).shape == expected.grid
    # the grid covers the page: cell centres from half a cell in, one cell of page pixels apart
    assert (heat["dx"], heat["dy"]) == pytest.approx((page.width / cols, page.height / rows))
    assert (heat["x0"], heat["y0"]) == pytest.approx((page.width / cols / 2, page.height / rows / 2))
    [picker] = [s for s in at.selectbox if s.label == "Similarity of"]
    assert picker.options[0] == "whole query" and len(picker.options) == 1 + len(expected.tokens)
    picker.set_value(picker.options[2]).run()  # the query's second token
    [heat] = _heatmaps(at)
    drawn = similarity_map(expected.sims, page.width, page.height, token=1)
    np.testing.assert_allclose(_z(heat).astype(float), drawn.values, atol=1e-3)
    captions = [unescape_md(c) for c in texts(at.caption)]
    assert any(f"visual similarity of token 2: {expected.tokens[1]!r}" in c for c in captions), captions
