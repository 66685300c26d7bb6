"""What each turn's picture shows (pages/ui/scene.py), the episode graph (agent/episode_graph.py) and
the turn view's figures (agent/figures.py), on real trajectories: episodes run over real indexes
with the replies served over HTTP by the local OpenAI-compatible test server. No Streamlit here."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from agent.episode_graph import episode_graph
from agent.figures import HeatLayer, figure_height, graph_figure, layered_figure
from agent.loop import AgentConfig, new_trajectory, run_to_end
from agent.policies import make_policy
from agent.search import LocalSearcher
from support.agent_index import open_tiny_index
from support.fake_openai_server import FakeOpenAIServer
from pages.ui import scene as scenes
from support.replay_fixtures import ten_turn_trajectory

CROP_OF_CROP = [  # search, crop, crop of the crop, answer (read from the second crop)
    "<think>Find it.</think><search>revenue 2023</search>",
    "<think>zoom</think><bbox>[40, 30, 500, 300]</bbox>",
    "<think>closer</think><bbox>[50, 50, 400, 250]</bbox>",
    "<think>done</think><answer>4.2 billion dollars</answer>",
]


@pytest.fixture(scope="module")
def ten(demo_index, tmp_path_factory):
    return ten_turn_trajectory(tmp_path_factory.mktemp("ten"), demo_index.folder)


def tiny_run(script, gold=None):
    searcher = LocalSearcher(open_tiny_index())
    with FakeOpenAIServer(list(script)) as server:
        policy = make_policy("vllm", base_url=server.base_url)
        config = AgentConfig(max_turns=10)
        return run_to_end(new_trajectory("What was the revenue in 2023?", policy, config, gold=gold), policy, searcher, config)


@pytest.fixture(scope="module")
def nested():
    return tiny_run(CROP_OF_CROP, gold={"answer": "4.2 billion dollars", "pages": ["report_1"], "boxes": {"report_1": [70, 100, 500, 200]}})


def test_a_search_turn_shows_the_page_it_showed_the_model(ten):
    first = scenes.scene(ten.turns[0], ten)
    assert first.view == ten.turns[0].observation and first.whole_page and first.outlines == []
    assert first.caption == f"Turn 1 · page shown to the model: page {ten.turns[0].shown_page_id} (shown in turn 1)"
    assert first.relevance_query == ten.turns[0].argument


def test_a_crop_turn_outlines_the_bbox_and_the_padded_crop_on_its_page(nested):
    crop = nested.turns[1]
    sc = scenes.scene(crop, nested)
    assert sc.view == crop.acted_on and sc.whole_page
    boxes = {o.name: o.box for o in sc.outlines}
    assert set(boxes) == {scenes.GOLD, scenes.BBOX, scenes.CROP}  # the page is the gold page: its evidence too
    assert boxes[scenes.CROP] == pytest.approx(crop.bbox_page)
    assert boxes[scenes.BBOX] == pytest.approx(crop.acted_on.model_to_page(crop.bbox_model))
    assert boxes[scenes.GOLD] == (70, 100, 500, 200)
    assert sc.image_name == "page report_1 (shown in turn 1)" and sc.role == "cropped from"


def test_a_crop_of_a_crop_outlines_the_crop_it_acted_on(nested):
    second = nested.turns[2]
    sc = scenes.scene(second, nested)
    boxes = {o.name: o.box for o in sc.outlines}
    assert boxes[scenes.PREVIOUS] == pytest.approx(nested.turns[1].observation.region)
    assert sc.image_name == "crop of page report_1 (shown in turn 2)"
    # the crop lies inside the crop it was cut from
    assert all(boxes[scenes.CROP][i] >= boxes[scenes.PREVIOUS][i] - 1e-6 for i in (0, 1))
    assert all(boxes[scenes.CROP][i] <= boxes[scenes.PREVIOUS][i] + 1e-6 for i in (2, 3))


def test_an_answer_is_drawn_over_the_last_image_the_model_saw_not_the_last_page(nested, ten):
    answer = scenes.scene(nested.turns[3], nested)
    assert answer.view == nested.turns[2].observation and not answer.whole_page  # the second crop, as sent
    assert answer.caption == "Turn 4 · answer read from the last image the model saw: crop of page report_1 (shown in turn 3)"
    last = scenes.scene(ten.turns[9], ten)  # searched last: the page that search showed
    assert last.view == ten.turns[8].observation
    invalid = scenes.scene(ten.turns[7], ten)  # an invalid reply: the last image seen before it
    assert invalid.view == ten.turns[6].observation and invalid.role == "the last image the model saw"


def test_a_search_that_showed_nothing_new_says_so():
    # the tiny index has 3 pages: the fourth search finds only pages shown before
    again = tiny_run([f"<think>{i}</think><search>revenue staff cloud {i}</search>" for i in range(4)] + ["<think>c</think><answer>x</answer>"])
    assert [t.shown_page_id is not None for t in again.turns[:4]] == [True, True, True, False]
    sc = scenes.scene(again.turns[3], again)
    assert sc.view is None and sc.caption == "Every page found was shown before: the model saw no new page."


def test_what_the_score_means_follows_the_index_fusion():
    note = scenes.fusion_note({"method": "score", "weights": {"dense": 1.0, "lexical": 1.0}})
    assert "from 0 to 2" in note and "2.00 means both retrievers ranked the page first" in note
    assert "not comparable across searches" in note
    assert "Reciprocal-rank fusion" in scenes.fusion_note({"method": "rrf", "rrf_k": 60})
    assert scenes.short_id("aurora_water_report_2025_1") == "aurora_…t_2025_1" and len(scenes.short_id("x" * 40)) == 16
    assert scenes.short_id("slide_3_1024") == "slide_3_1024"


def test_the_episode_graph_links_queries_pages_crops_and_the_answer(ten):
    graph = episode_graph(ten)
    kinds = [n.kind for n in graph.nodes]
    assert kinds.count("query") == 4 and kinds.count("crop") == 4 and kinds.count("invalid") == 1 and kinds.count("answer") == 1
    pages = [n.key for n in graph.nodes if n.kind == "page"]
    assert len(pages) == len(set(pages)) == 4  # one node per page, however often it was found
    assert {t.index for t in ten.turns} == {n.turn for n in graph.nodes if n.kind != "question"}  # every turn opens from a node
    edges = {(e.source, e.target, e.kind) for e in graph.edges}
    first_page = f"page:{ten.turns[0].shown_page_id}"
    assert ("query:0", first_page, "brought") in edges
    assert (first_page, "crop:1", "cropped") in edges and ("crop:1", "crop:2", "cropped") in edges  # a crop of a crop
    assert (f"page:{ten.turns[8].shown_page_id}", "answer", "answered") in edges  # from the last image seen
    column = {n.key: n.column for n in graph.nodes}
    assert column["question"] == 0 and column["query:0"] == 1 and column[first_page] == 2
    assert column["crop:1"] == 3 and column["crop:2"] == 4 and column["answer"] == 5


def test_the_graph_figure_maps_each_point_to_its_turn(ten):
    graph = episode_graph(ten)
    figure, turns_of = graph_figure(graph, current_turn=3)
    assert len(turns_of) == len(figure.data)
    for trace, turns in zip(figure.data, turns_of):
        if trace.mode == "markers+text":
            assert [c[0] for c in trace.customdata] == turns
    ringed = [w for trace in figure.data if trace.mode == "markers+text" for w in trace.marker.line.width]
    assert ringed.count(3) == len(graph.nodes_of_turn(3))  # the current turn's nodes stand out


def test_the_turn_figure_names_every_layer_in_a_legend_not_on_the_page():
    image = Image.new("RGB", (1190, 1684), "white")
    outlines = [((100, 200, 900, 600), scenes.CROP, "#d62728", "solid"), ((150, 250, 850, 550), scenes.BBOX, "#1f77b4", "solid"),
                ((10, 10, 50, 50), scenes.GOLD, "#1f9d55", "dot"), ((60, 60, 90, 90), scenes.GOLD, "#1f9d55", "dot")]
    heat = [HeatLayer(np.ones((4, 3)) * 0.5, (0, 0, 1190, 1684), "retrieval relevance", "heat"),
            HeatLayer(np.eye(3), (0, 0, 1190, 1684), "model attention", "attention")]
    fig = layered_figure(image, region=(0, 0, 1190, 1684), heatmaps=heat, outlines=outlines, height=900)
    shapes = fig.layout.shapes
    assert [s.name for s in shapes] == [scenes.CROP, scenes.BBOX, scenes.GOLD, scenes.GOLD]
    assert [s.showlegend for s in shapes] == [True, True, True, False]  # one legend entry per layer
    assert all(s.label.text is None for s in shapes)  # nothing written over the page's own text
    assert (shapes[0].x0, shapes[0].y0, shapes[0].x1, shapes[0].y1) == (100, 200, 900, 600)
    maps = [t for t in fig.data if t.type == "heatmap"]
    assert [t.name for t in maps] == ["retrieval relevance", "model attention"] and all(t.showlegend for t in maps)
    bars = [t.colorbar for t in maps]
    assert all(b.orientation == "h" and b.y <= 0 for b in bars) and bars[0].x != bars[1].x  # side by side, under the page
    assert maps[0].colorscale != maps[1].colorscale
    assert fig.layout.legend.orientation == "h" and fig.layout.legend.y >= 1  # above the picture
    assert fig.layout.modebar.orientation == "v" and fig.layout.margin.r >= 30  # the mode bar beside it, not over it
    assert fig.layout.yaxis.range == (1684, 0) and fig.layout.yaxis.scaleanchor == "x"


def test_the_figure_is_as_tall_as_the_picture_needs_at_its_width():
    portrait = figure_height((0, 0, 1190, 1684), 900, heat_layers=0)
    assert portrait == pytest.approx(900 * 1684 / 1190 + 40, abs=2)
    slide = figure_height((0, 0, 5334, 3000), 900, heat_layers=1)
    assert slide == pytest.approx(900 * 3000 / 5334 + 34 + 58, abs=2)
    assert figure_height((0, 0, 10, 10_000), 900, 0) == 2400  # capped
