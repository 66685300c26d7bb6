"""Each protocol profile's requests over real HTTP, byte for byte.

The training profile's expected messages are written here from the protocol note alone
(../shared/notes/vrag-protocol.md, "The training loop differs from the demo client"): the two fixed
messages are read out of the note, the crop and the tags-only rule are re-implemented below from
its words, and nothing is computed by the code under test. The demo profile's bodies are pinned by
tests/integration/test_agent_http.py (an independent rewrite of the demo client); here it is checked that the
default profile of the library is still that one, and that `explain` differs from `training` only
in its messages.
"""
from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest
from PIL import Image

from agent.conversation import build_messages
from agent.loop import AgentConfig, new_trajectory, run_episode
from agent.policies import make_policy
from agent.prompts import FEEDBACK
from agent.search import LocalSearcher
from agent.trajectory import Trajectory, TrajectoryStore
from support.agent_index import open_tiny_index
from support.fake_openai_server import FakeOpenAIServer
from support.reference_client import ref_process  # the reference client's image handling, written out independently

MODEL = "Qwen/Qwen2.5-VL-7B-Instruct"
QUESTION = "What was the revenue in 2023?"
NOTE = Path(__file__).resolve().parents[2] / ".." / "shared" / "notes" / "vrag-protocol.md"


@pytest.fixture(scope="module")
def index():
    return open_tiny_index()


# --- the training loop, written out again from the note -----------------------------------------------


def note_messages() -> tuple[str, str]:
    section = NOTE.read_text(encoding="utf-8").split("## The training loop differs from the demo client")[1].split("\n## ")[0]
    no_action = re.search(r"- no action at all:\n\s+`([^`]+)` \+ a newline \+ `([^`]+)`", section)
    bad_bbox = re.search(r"a crop that fails:\n\s+`([^`]+)`", section)
    return no_action.group(1) + "\n" + no_action.group(2), bad_bbox.group(1)


NO_ACTION, BAD_BBOX = note_messages()
# the training loop's user turn is "<|im_start|>user\n" + message + "\n<|im_end|>"; a chat template
# renders a text part as "<|im_start|>user\n" + text + "<|im_end|>": so the text sent is message + "\n"
TURN_END = "\n"


def ref_training_crop(page: Image.Image, latest: Image.Image, bbox: list[float]) -> Image.Image:
    """Validation mode: pad 28 in the latest image's pixels, scale onto the retrieved page, clamp, crop."""
    width, height = latest.size
    raw_width, raw_height = page.size
    box = [bbox[0] - 28, bbox[1] - 28, bbox[2] + 28, bbox[3] + 28]
    area = [int(raw_width * box[0] / width), int(raw_height * box[1] / height), int(raw_width * box[2] / width), int(raw_height * box[3] / height)]
    area = [max(0, area[0]), max(0, area[1]), min(raw_width, area[2]), min(raw_height, area[3])]
    return page.crop(area)


def ref_tags(reply: str) -> str:
    return "\n".join(f"<{tag}>{content}</{tag}>" for tag, content in re.findall(r"<(answer|search|think|bbox)>(.*?)</\1>", reply, re.DOTALL))


def image(jpeg: bytes) -> dict:
    return {"type": "image_url", "image_url": {"url": "data:image;base64," + base64.b64encode(jpeg).decode()}}


def text(value: str) -> dict:
    return {"type": "text", "text": value}


SCRIPT = [
    "Sure. <think>I need the revenue figure.</think>\n<search>revenue 2023</search> Searching now.",
    "<think>The sentence is near the top.</think>\n<bbox>[60, 40, 480, 140]</bbox>",
    "<think>Zoom into the number.</think><bbox>[100, 50, 500, 250]</bbox>",  # on the crop, but cut from the page
    "<think>Closer.</think><bbox>[1, 2, 3]</bbox>",  # not 4 numbers: the bbox message
    "I will answer now",  # no action: the other message (and nothing of it is kept in context)
    "<search>revenue 2023</search><answer>ignored</answer>",  # no <think>, two actions: the search runs
    "<think>Box off the page.</think><bbox>[900, 900, 950, 950]</bbox>",  # the crop fails: the bbox message
    "<think>It says 4.2 billion dollars.</think><answer>4.2 billion dollars</answer>",
]


def run(index, protocol: str, script: list[str], max_turns: int = 10):
    config = AgentConfig(max_turns=max_turns, protocol=protocol)
    with FakeOpenAIServer(list(script)) as server:
        policy = make_policy("vllm", base_url=server.base_url, model=MODEL)
        trajectory = new_trajectory(QUESTION, policy, config)
        turns = list(run_episode(trajectory, policy, LocalSearcher(index), config))
        bodies = server.requests
    assert turns == trajectory.turns
    return trajectory, bodies


def expected_training_messages(index, shown_page_2: str, feedback: dict[int, str]) -> list[dict]:
    """The messages of the last call, from the note; `feedback[i]` is the text answering invalid turn i."""
    page = Image.open(index.page("report_1").image_file)
    shown, jpeg_page = ref_process(page)
    crop1 = ref_training_crop(page, shown, [60, 40, 480, 140])
    shown1, jpeg_crop1 = ref_process(crop1)
    crop2 = ref_training_crop(page, shown1, [100, 50, 500, 250])  # the page again, not crop1
    _, jpeg_crop2 = ref_process(crop2)
    _, jpeg_page2 = ref_process(Image.open(index.page(shown_page_2).image_file))
    replies = [ref_tags(r) for r in SCRIPT[:7]]
    observations = [[image(jpeg_page)], [image(jpeg_crop1)], [image(jpeg_crop2)], [text(feedback[3])], [text(feedback[4])],
                    [image(jpeg_page2)], [text(feedback[6])]]
    prompt = NOTE.read_text(encoding="utf-8")
    prompt = re.search(r"## The prompt.*?```\n(.*?)\n```", prompt, re.DOTALL).group(1).replace("{question}", QUESTION) + "\n"
    messages = [{"role": "user", "content": [text(prompt)]}]
    for reply, observation in zip(replies, observations):
        messages += [{"role": "assistant", "content": reply}, {"role": "user", "content": observation}]
    return messages


def test_training_profile_requests_match_the_training_loop(index, tmp_path):
    traj, bodies = run(index, "training", SCRIPT)
    assert [t.action for t in traj.turns] == ["search", "bbox", "bbox", "invalid", "invalid", "search", "invalid", "answer"]
    assert traj.config["protocol"] == "training" and traj.answer == "4.2 billion dollars" and traj.finished
    page_2 = traj.turns[5].shown_page_id
    assert page_2 not in (None, "report_1")
    expected = expected_training_messages(index, page_2, {3: BAD_BBOX + TURN_END, 4: NO_ACTION + TURN_END, 6: BAD_BBOX + TURN_END})
    assert len(bodies) == 8
    assert bodies[-1] == {"model": MODEL, "messages": expected, "stream": False}
    for k, body in enumerate(bodies):  # every call was the prefix of the last one
        assert body == {"model": MODEL, "messages": expected[: 1 + 2 * k], "stream": False}
    # the reply kept in context is its tags; the raw reply stays recorded
    assert expected[1]["content"] == "<think>I need the revenue figure.</think>\n<search>revenue 2023</search>"
    assert expected[9]["content"] == "" and expected[11]["content"] == "<search>revenue 2023</search>\n<answer>ignored</answer>"
    assert [t.raw_text for t in traj.turns] == SCRIPT
    # the crop of the crop was cut from the page: its region is in page pixels, not inside the first crop
    first, second = traj.turns[1].bbox_page, traj.turns[2].bbox_page
    assert second[0] < first[0] or second[1] < first[1] or second[2] > first[2] or second[3] > first[3]
    assert traj.turns[2].acted_on == traj.turns[1].observation  # the coordinates were the crop's
    # saved and loaded, the trajectory rebuilds exactly what was sent
    folder = TrajectoryStore(tmp_path).save(traj)
    loaded = Trajectory.load(folder)
    partial = Trajectory.from_dict({**loaded.to_dict(), "turns": loaded.to_dict()["turns"][:7]})
    assert build_messages(partial, lambda f: (folder / f).read_bytes()) == expected


def test_explain_profile_is_training_with_our_specific_messages(index):
    traj, bodies = run(index, "explain", SCRIPT)
    assert [t.action for t in traj.turns] == ["search", "bbox", "bbox", "invalid", "invalid", "search", "invalid", "answer"]
    feedback = {3: FEEDBACK["bbox_format"].format(detail="expected 4 numbers >= 0, got [1, 2, 3]"),
                4: FEEDBACK["no_action"].format(detail=""),
                6: FEEDBACK["bbox_crop_failed"].format(detail="[900, 900, 950, 950] leaves nothing to crop from the 1190x1684 page")}
    expected = expected_training_messages(index, traj.turns[5].shown_page_id, feedback)
    assert bodies[-1] == {"model": MODEL, "messages": expected, "stream": False}
    assert traj.config["protocol"] == "explain"


def test_demo_profile_is_the_library_default_and_keeps_replies_verbatim(index):
    script = [SCRIPT[0], "<search>revenue 2023</search>", SCRIPT[-1]]
    default, bodies = run(index, AgentConfig().protocol, script)
    assert AgentConfig().protocol == "demo" and default.config["protocol"] == "demo"
    assert [t.action for t in default.turns] == ["search", "invalid", "answer"]  # demo: a missing <think> is an error
    assert bodies[-1]["messages"][1] == {"role": "assistant", "content": SCRIPT[0]}  # verbatim, text outside tags too
    assert bodies[-1]["messages"][4] == {"role": "user", "content": [text(default.turns[1].feedback)]}
    assert "<think>" in default.turns[1].feedback and len(default.turns[1].feedback) < 220


def test_training_nudge_and_fallback_as_in_the_demo(index):
    script = ["<think>a</think><search>staff offices</search>", "no action here", "<think>c</think><answer>412</answer>"]
    traj, bodies = run(index, "training", script, max_turns=3)
    assert bodies[-1]["messages"][-1] == {"role": "user", "content": [text(NO_ACTION + TURN_END + "\n" + "please answer the question now with answer in <answer> ... </answer>")]}
    assert traj.answer == "412"


@pytest.mark.parametrize("reply", [SCRIPT[0], SCRIPT[4], SCRIPT[5], "<think>a</think><answer>b</answer>", ""])
def test_reply_segments_map_the_sent_reply_back_to_the_recorded_one(reply):
    from agent.conversation import reply_segments, sent_reply

    for context in ("tags", "verbatim"):
        sent = sent_reply(reply, context)
        assert sent == (ref_tags(reply) if context == "tags" else reply)
        covered = 0
        for sent_start, raw_start, length in reply_segments(reply, context):
            assert sent[sent_start: sent_start + length] == reply[raw_start: raw_start + length]
            covered += length
        assert covered == len(sent) - (max(0, len(reply_segments(reply, context)) - 1) if context == "tags" else 0)  # all but the joins
