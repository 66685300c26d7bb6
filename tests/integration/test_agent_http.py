"""The whole loop over real HTTP: a local OpenAI-compatible server replaying scripted replies, a real
DocumentIndex (and our real search server), real JPEGs. The request bodies the model server received
are checked byte for byte against an independent re-implementation of the reference client."""
from __future__ import annotations

import base64
import io
import math

import httpx
import numpy as np
import pytest
from PIL import Image

from agent.loop import AgentConfig, new_trajectory, run_episode
from agent.policies import make_policy
from agent.prompts import FINAL_TURN_NUDGE, render_prompt
from agent.search import HttpSearcher, LocalSearcher
from agent.trajectory import TrajectoryStore, image_bytes
from support.agent_index import open_tiny_index
from support.fake_openai_server import CONTEXT_ERROR, FakeOpenAIServer, Fail, Slow, closed_port_url, decode_images
from search_engine.server import create_app
from search_engine.types import SearchHit
from support.served import serving
from support.reference_client import ref_crop, ref_process

MODEL = "Qwen/Qwen2.5-VL-7B-Instruct"
QUESTION = "What was the revenue in 2023?"
PREFIX = "data:image;base64,"


@pytest.fixture(scope="module")
def index():
    return open_tiny_index()


@pytest.fixture(scope="module")
def search_server(index):
    """Our real search server (search_engine/server.py) on a free port."""
    with serving(create_app(index)) as url:
        yield url


# --- the reference client's image handling, written out again independently -----------------


def sent_jpegs(body: dict) -> list[bytes]:
    out = []
    for m in body["messages"]:
        if isinstance(m["content"], list):
            for p in m["content"]:
                if p["type"] == "image_url":
                    url = p["image_url"]["url"]
                    assert url.startswith(PREFIX)
                    out.append(base64.b64decode(url[len(PREFIX):]))
    return out


def run(policy, searcher, max_turns=10):
    config = AgentConfig(max_turns=max_turns)
    traj = new_trajectory(QUESTION, policy, config)
    turns = list(run_episode(traj, policy, searcher, config))
    assert turns == traj.turns
    return traj


SCRIPT = [
    "<think>I need the revenue figure.</think>\n<search>revenue 2023</search>",
    "<think>The sentence is near the top.</think>\n<bbox>[60, 40, 480, 140]</bbox>",
    "<think>Zoom into the number.</think>\n<bbox>[100, 50, 500, 250]</bbox>",
    "<think>Closer.</think><bbox>[1, 2, 3]</bbox>",  # malformed: three numbers
    "I will search again <search>revenue</search>",  # malformed: no <think>
    "<think>two at once</think><search>a</search><answer>b</answer>",  # malformed: two actions
    "<think>Check another page.</think><search>revenue 2023</search>",  # page 1 was shown: the next hit
    "<think>It says 4.2 billion dollars.</think><answer>4.2 billion dollars</answer>",
]


def test_whole_loop_over_http(index, tmp_path):
    with FakeOpenAIServer(list(SCRIPT)) as server:
        policy = make_policy("vllm", base_url=server.base_url, model=MODEL)
        traj = run(policy, LocalSearcher(index))
        bodies = server.requests

    assert [t.action for t in traj.turns] == ["search", "bbox", "bbox", "invalid", "invalid", "invalid", "search", "answer"]
    assert traj.answer == "4.2 billion dollars" and traj.finished and traj.error is None
    first_page = traj.turns[0].shown_page_id
    assert first_page == "report_1" and traj.turns[6].shown_page_id not in (None, "report_1")

    # -- the request bodies, exactly --
    assert len(bodies) == 8
    for body in bodies:
        assert set(body) == {"model", "messages", "stream"} and body["model"] == MODEL and body["stream"] is False
        assert all(m["role"] in ("user", "assistant") for m in body["messages"])  # no system message
    prompt = bodies[0]["messages"]
    assert prompt == [{"role": "user", "content": [{"type": "text", "text": render_prompt(QUESTION)}]}]
    assert prompt[0]["content"][0]["text"].encode() == (
        "Answer the given question. You must conduct reasoning inside <think> and </think> first every time you get new "
        "information. After reasoning, if you find you lack some knowledge, you can call a search engine by <search> query "
        "</search> and user will return the searched results. Every time you retrieve an image, you have the option to crop "
        "it to obtain a clearer view, the format for coordinates is <bbox>[x1, y1, x2, y2]</bbox>. You can search as many "
        "times as your want. If you find no further external knowledge needed, you can directly provide the answer inside "
        "<answer> and </answer>, without detailed illustrations. For example, <answer> Beijing </answer>. Question: "
        "What was the revenue in 2023?\n"
    ).encode()
    assert [len(decode_images(b)) for b in bodies] == [0, 1, 2, 3, 3, 3, 3, 4]
    final = bodies[-1]["messages"]
    assert [m["role"] for m in final] == ["user"] + ["assistant", "user"] * 7
    for i, reply in enumerate(SCRIPT[:7]):
        assert final[1 + 2 * i] == {"role": "assistant", "content": reply}  # replies sent back verbatim
    # observations are image-only; feedback is one short text-only message
    assert final[2]["content"][0]["type"] == "image_url" and len(final[2]["content"]) == 1
    for k, turn in zip((8, 10, 12), traj.turns[3:6]):
        assert final[k] == {"role": "user", "content": [{"type": "text", "text": turn.feedback}]}
    assert "expected 4 numbers" in traj.turns[3].feedback and "<think>" in traj.turns[4].feedback
    assert "more than one action" in traj.turns[5].feedback

    # -- the images: byte-identical to the reference client's page, crop and crop of the crop --
    raw = Image.open(index.page(first_page).image_file)
    assert raw.size == (1190, 1684)
    shown, jpeg_page = ref_process(raw)
    assert shown.size == (532, 753)  # sqrt(401408 / (1190*1684)) = 0.44756
    crop1 = ref_crop(raw, shown, [60, 40, 480, 140])
    shown1, jpeg_crop1 = ref_process(crop1)
    crop2 = ref_crop(crop1, shown1, [100, 50, 500, 250])
    shown2, jpeg_crop2 = ref_process(crop2)
    page2 = Image.open(index.page(traj.turns[6].shown_page_id).image_file)
    jpegs = sent_jpegs(bodies[-1])
    assert jpegs[:3] == [jpeg_page, jpeg_crop1, jpeg_crop2]
    assert jpegs[3] == ref_process(page2)[1]
    for jpeg, turn in zip(jpegs, [traj.turns[0], traj.turns[1], traj.turns[2], traj.turns[6]]):
        assert jpeg == traj.images[turn.observation.file]
        assert Image.open(io.BytesIO(jpeg)).size == turn.observation.input_size
    # the crop of the crop, as page pixels: the same pixels as an independent crop of the page
    region = traj.turns[2].bbox_page
    assert np.array_equal(np.asarray(raw.crop(tuple(int(v) for v in region))), np.asarray(crop2))
    assert traj.turns[2].acted_on == traj.turns[1].observation
    assert traj.turns[1].bbox_model == [60, 40, 480, 140]

    # -- usage and timing recorded; saved and loaded back bit for bit --
    assert all(t.prompt_tokens and t.completion_tokens for t in traj.turns)
    assert all(t.model_seconds > 0 for t in traj.turns)
    store = TrajectoryStore(tmp_path)
    folder = store.save(traj)
    loaded = store.load(traj.id)
    assert loaded == traj
    for turn in loaded.turns:
        if turn.observation:
            assert image_bytes(folder, turn.observation) == traj.images[turn.observation.file]


def test_final_turn_nudge_over_http(index):
    script = ["<think>a</think><search>staff offices</search>", "<think>b</think><bbox>[0, 0, 200, 200]</bbox>", "<think>c</think><answer>412</answer>"]
    with FakeOpenAIServer(script) as server:
        traj = run(make_policy("vllm", base_url=server.base_url, model=MODEL), LocalSearcher(index), max_turns=3)
        last = server.requests[-1]["messages"][-1]
    assert last["role"] == "user" and [p["type"] for p in last["content"]] == ["image_url", "text"]
    assert last["content"][1] == {"type": "text", "text": FINAL_TURN_NUDGE}
    assert traj.answer == "412" and traj.finished


@pytest.mark.parametrize("failure, words", [
    (Fail(500, "engine crashed"), ["HTTP 500", "engine crashed"]),
    (Fail(400, CONTEXT_ERROR), ["longer than the model's context", "32768 tokens"]),
    (Slow(2.0, "<think>late</think><answer>x</answer>"), ["did not answer within 0.5 s"]),
])
def test_server_failure_mid_episode_keeps_the_partial_trajectory(index, tmp_path, failure, words):
    with FakeOpenAIServer([SCRIPT[0], failure]) as server:
        policy = make_policy("vllm", base_url=server.base_url, model=MODEL, timeout=0.5)
        traj = run(policy, LocalSearcher(index))
        endpoint = f"{server.base_url}/chat/completions"
    assert len(traj.turns) == 1 and traj.turns[0].shown_page_id == "report_1"
    assert endpoint in traj.error and all(w in traj.error for w in words)
    assert traj.answer is None and not traj.finished
    store = TrajectoryStore(tmp_path)
    store.save(traj)
    loaded = store.load(traj.id)
    assert loaded == traj and loaded.error == traj.error


def test_server_down(index, tmp_path):
    url = closed_port_url()
    traj = run(make_policy("vllm", base_url=url, model=MODEL), LocalSearcher(index))
    assert traj.turns == [] and f"{url}/chat/completions" in traj.error and "cannot reach" in traj.error
    TrajectoryStore(tmp_path).save(traj)
    assert TrajectoryStore(tmp_path).load(traj.id).error == traj.error


def _same_hits(a: list[dict], b: list[dict]) -> bool:
    """Equal hits, scores up to float rounding: the server's thread may run torch with another number of threads
    than the test's (set per thread), which changes the last bits of a query embedding, not the ranking."""
    def same(x, y):
        if isinstance(x, dict) and isinstance(y, dict):
            return x.keys() == y.keys() and all(same(x[k], y[k]) for k in x)
        if isinstance(x, float) and isinstance(y, float):
            return math.isclose(x, y, rel_tol=1e-5, abs_tol=1e-6)
        return x == y
    return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))


def test_http_searcher_matches_local(index, search_server):
    script = [SCRIPT[0], SCRIPT[1], SCRIPT[-1]]
    results = []
    for searcher in (LocalSearcher(index), HttpSearcher(search_server)):
        with FakeOpenAIServer(list(script)) as server:
            results.append(run(make_policy("vllm", base_url=server.base_url, model=MODEL), searcher))
    local, remote = results
    assert [t.shown_page_id for t in remote.turns] == [t.shown_page_id for t in local.turns]
    assert _same_hits(remote.turns[0].hits, local.turns[0].hits), (remote.turns[0].hits, local.turns[0].hits)
    assert remote.turns[1].bbox_page == local.turns[1].bbox_page
    for a, b in zip(local.turns, remote.turns):
        if a.observation:
            assert remote.images[b.observation.file] == local.images[a.observation.file]


def test_http_searcher_errors_name_the_url(search_server):
    from agent.search import QueryRejected, SearchError

    with pytest.raises(QueryRejected, match="2,000"):
        HttpSearcher(search_server).search("word " * 500, 10)
    with pytest.raises(SearchError, match="HTTP 404"):
        HttpSearcher(search_server).page_image("no_such_page")
    down = closed_port_url().removesuffix("/v1")
    with pytest.raises(SearchError, match=f"cannot reach the search server at {down}/search"):
        HttpSearcher(down).search("revenue", 3)


class OnePage(HttpSearcher):
    """Our search server's searcher with its retrieval replaced by one known hit (each page in turn)."""

    def __init__(self, base_url, hit, client):
        super().__init__(base_url, client=client)
        self.hit = hit

    def search(self, query, top_k):
        return [self.hit]


def test_every_demo_page_is_sent_as_the_reference_sends_it(demo_index):
    """All 25 real pages (one 5334x3000) over our search server: the search turn sends the page's kept
    model view, the crop is cut from the full page; both byte-identical to the reference client's."""
    bbox = [100, 80, 400, 300]
    script = ["<think>a</think><search>page</search>", f"<think>b</think><bbox>{bbox}</bbox>", "<think>c</think><answer>x</answer>"]
    sizes = set()
    with serving(create_app(demo_index)) as url:
        pages = demo_index.pages()
        assert len(pages) == 25
        for page in pages:
            asked = []
            client = httpx.Client(event_hooks={"request": [lambda request: asked.append(request.url.path)]})
            hit = SearchHit(1, 1.0, page.page_id, page.image_file, page.source, page.page)
            with FakeOpenAIServer(list(script)) as server:
                traj = run(make_policy("vllm", base_url=server.base_url, model=MODEL), OnePage(url, hit, client))
                body = server.requests[-1]
            raw = Image.open(page.image_file)
            shown, page_jpeg = ref_process(raw)
            crop_jpeg = ref_process(ref_crop(raw, shown, bbox))[1]
            assert sent_jpegs(body) == [page_jpeg, crop_jpeg], page.page_id
            assert [t.observation.input_size for t in traj.turns[:2]] == [shown.size, Image.open(io.BytesIO(crop_jpeg)).size]
            assert asked == [f"/pages/{page.page_id}/model-view", f"/pages/{page.page_id}/image"]  # the view, then the page once
            sizes.add(raw.size)
    assert (5334, 3000) in sizes and (1024, 768) in sizes
