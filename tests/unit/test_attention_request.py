"""The map request record (agent/attention_request.py): validation, file keys, JSON round trip."""
from __future__ import annotations

import pytest

from agent.attention_request import KEY_RE, MapRequest

CHOICES = [
    MapRequest(),
    MapRequest(select="answer", layers=(20, 27)),
    MapRequest(select="token", turn=3, token=12),
    MapRequest(select="bbox", layers=(14, 14), head=5, reduce="max"),
    MapRequest(select="reply", layers=(0, 3), per_head=True, sink="drop"),
    MapRequest(select="answer", turn=2, sink="baseline"),
]


def test_keys_name_every_choice_apart_and_are_plain_file_names():
    keys = [r.key() for r in CHOICES]
    assert keys == ["action_Lall_mean", "answer_L20-27_mean", "t03k12_Lall_mean", "bbox_L14-14_h5-max",
                    "reply_L0-3_heads-mean_sink-drop", "t02-answer_Lall_mean_sink-baseline"]
    assert all(KEY_RE.match(k) and "/" not in k for k in keys)
    assert len(set(keys)) == len(keys)


def test_json_round_trip_and_words_for_a_caption():
    for r in CHOICES:
        assert MapRequest.from_dict(r.to_dict()) == r
    assert MapRequest.from_dict({"select": "answer", "layers": [1, 2]}).layers == (1, 2)
    assert "sinks dropped" in CHOICES[4].describe() and "baseline subtracted" in CHOICES[5].describe()
    assert "sink" not in CHOICES[1].describe()
    assert CHOICES[2].describe().startswith("token 12 of turn 4")
    assert "head 5" in CHOICES[3].describe() and "layer 14" in CHOICES[3].describe()


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"select": "thought"}, "select must be one of"),
        ({"reduce": "median"}, "reduce must be one of"),
        ({"sink": "clip"}, "sink must be one of"),
        ({"select": "token", "turn": 1}, "needs both turn and token"),
        ({"token": 3}, "only makes sense with select='token'"),
        ({"head": 1, "per_head": True}, "not both"),
        ({"layers": (3, 1)}, "0 <= first <= last"),
        ({"layers": (1,)}, "layers must be"),
        ({"head": -1}, "non-negative integer"),
        ({"turn": True}, "non-negative integer"),
    ],
)
def test_bad_requests_say_what_is_wrong(fields, message):
    with pytest.raises(ValueError, match=message):
        MapRequest(**fields)


def test_from_dict_refuses_what_it_does_not_know():
    with pytest.raises(ValueError, match="unknown map request fields"):
        MapRequest.from_dict({"select": "answer", "layer": 3})
    with pytest.raises(ValueError, match="JSON object"):
        MapRequest.from_dict(["answer"])
    with pytest.raises(ValueError, match="per_head must be"):
        MapRequest.from_dict({"per_head": "yes"})


def test_checked_against_the_model():
    MapRequest(layers=(0, 27), head=27).check(28, 28)
    with pytest.raises(ValueError, match="< 28"):
        MapRequest(layers=(0, 28)).check(28, 28)
    with pytest.raises(ValueError, match="head 28 is outside the model's 28 attention heads"):
        MapRequest(head=28).check(28, 28)
    assert MapRequest(per_head=True).heads == "each" and MapRequest(head=2).heads == 2 and MapRequest().heads is None
