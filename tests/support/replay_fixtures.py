"""Long real trajectories for the turn-view tests and bench/replay_speed.py.

`ten_turn_trajectory` runs a real 10-turn episode (searches, crops, a crop of a crop, an invalid
reply, a Chinese query, an answer) over a real index with the replies served over HTTP by the
local OpenAI-compatible test server, and saves it to `data/trajectories`. The boxes are chosen
from the size of the image the server received, so they are valid in the model's space whatever
page the search showed.
"""
from __future__ import annotations

from pathlib import Path

from support.fake_openai_server import FakeOpenAIServer, decode_images


def _bbox(fractions: tuple[float, float, float, float], thought: str):
    def reply(body: dict) -> str:
        w, h = decode_images(body)[-1].size  # the last image sent: a bbox is in its pixels
        box = [round(fractions[0] * w), round(fractions[1] * h), round(fractions[2] * w), round(fractions[3] * h)]
        return f"<think>{thought}</think><bbox>[{', '.join(map(str, box))}]</bbox>"

    return reply


TEN_TURNS = [
    "<think>Find the slide about online travel in China.</think><search>online travel penetration China</search>",
    _bbox((0.05, 0.15, 0.7, 0.8), "The chart is on the left; zoom in."),
    _bbox((0.1, 0.1, 0.9, 0.6), "Closer, on the top rows."),
    "<think>Now the outbound trips.</think><search>outbound trips China 2020 millions</search>",
    _bbox((0.2, 0.2, 0.95, 0.9), "Zoom on the figure."),
    "<think>And the culture table.</think><search>Hofstede uncertainty avoidance Japan</search>",
    _bbox((0.0, 0.3, 0.6, 0.95), "The table rows."),
    "I am not sure what to do next.",  # no action: an invalid turn the loop records
    "<think>The Alibaba Cloud slides are in Chinese.</think><search>阿里云 2009年</search>",
    "<think>I have what I need.</think><answer>200 million trips</answer>",
]


def ten_turn_trajectory(data: Path, index_folder: Path, question: str = "How many outbound trips will China make in 2020?"):
    """Run and save the 10-turn episode over `index_folder` into data/trajectories; returns it."""
    from agent.loop import AgentConfig, new_trajectory, run_to_end
    from agent.policies import make_policy
    from agent.search import LocalSearcher
    from agent.trajectory import TrajectoryStore
    from search_engine.index import DocumentIndex

    searcher = LocalSearcher(DocumentIndex.open(index_folder))
    with FakeOpenAIServer(list(TEN_TURNS)) as server:
        policy = make_policy("vllm", base_url=server.base_url)
        config = AgentConfig(max_turns=10)
        trajectory = new_trajectory(question, policy, config, index=Path(index_folder).name)
        run_to_end(trajectory, policy, searcher, config)
    TrajectoryStore(Path(data) / "trajectories").save(trajectory)
    return trajectory
