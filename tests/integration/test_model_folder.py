"""agent/model_folder.py: what is wrong with a local model folder, said for a person, without loading it.

The good folder is a real saved Qwen2.5-VL (the tiny random one of tests/support/tiny_vlm.py); the broken
ones are copies of it with files missing, cut short or replaced, the way real downloads go wrong.
"""
from __future__ import annotations

import json
import shutil

import pytest

from agent.model_folder import check_model_folder


@pytest.fixture(scope="module")
def tiny():
    from support.tiny_vlm import tiny_model_dir

    return tiny_model_dir()


@pytest.fixture
def copy(tiny, tmp_path):
    """A copy of the tiny model folder (weights linked, not copied) to break."""
    folder = tmp_path / "model"
    folder.mkdir()
    for f in tiny.iterdir():
        if f.suffix == ".safetensors":
            (folder / f.name).symlink_to(f)
        else:
            shutil.copy(f, folder / f.name)
    return folder


def assert_no_shell(text: str):
    assert "`" not in text and " --" not in text and "huggingface-cli" not in text, text


def test_a_real_model_folder_passes_and_says_what_it_holds(tiny):
    check = check_model_folder(str(tiny))
    assert check.ok, check.problems
    assert "Qwen2.5-VL" in check.summary() and "MB of weights in 1 file" in check.summary()


def test_nothing_set_or_no_such_folder(tmp_path):
    for value, says in [("", "No model folder is set"), (str(tmp_path / "nope"), "There is no folder at"),
                        ("someone/not-downloaded-model", "not a model already downloaded to this machine")]:
        check = check_model_folder(value)
        assert not check.ok and says in check.summary()
        assert_no_shell(check.summary())


def test_a_file_or_an_unrelated_folder(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"x")
    assert "is a file" in check_model_folder(str(tmp_path / "weights.bin")).summary()
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "report.pdf").write_bytes(b"%PDF")
    [problem] = check_model_folder(str(tmp_path / "docs")).problems
    assert "none of a model's files" in problem


def test_missing_config_weights_and_processor_files_are_each_named(copy):
    for name in ("config.json", "model.safetensors", "preprocessor_config.json", "tokenizer.json"):
        (copy / name).unlink()
    problems = check_model_folder(str(copy)).problems
    assert len(problems) == 4, problems
    joined = " ".join(problems)
    for says in ("no config.json", "no weight files", "no preprocessor_config.json", "no tokenizer files"):
        assert says in joined
    assert_no_shell(joined)


def test_another_kind_of_model_is_named(copy):
    config = json.loads((copy / "config.json").read_text())
    config.update(model_type="llama", architectures=["LlamaForCausalLM"])
    (copy / "config.json").write_text(json.dumps(config))
    [problem] = check_model_folder(str(copy)).problems
    assert "describes a llama model (LlamaForCausalLM), not Qwen2.5-VL" in problem
    (copy / "config.json").write_text("{ broken")
    [problem] = check_model_folder(str(copy)).problems
    assert "config.json cannot be read" in problem


def test_weights_cut_short_or_left_as_git_lfs_pointers(copy, tiny):
    (copy / "model.safetensors").unlink()
    data = (tiny / "model.safetensors").read_bytes()
    (copy / "model.safetensors").write_bytes(data[: len(data) // 2])  # a download that stopped midway
    [problem] = check_model_folder(str(copy)).problems
    assert "model.safetensors is cut short" in problem
    (copy / "model.safetensors").write_text("version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 123\n")
    [problem] = check_model_folder(str(copy)).problems
    assert "Git LFS pointer" in problem


def test_a_sharded_model_with_a_missing_shard(copy):
    (copy / "model.safetensors").rename(copy / "model-00001-of-00002.safetensors")
    (copy / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {
        "a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}))
    [problem] = check_model_folder(str(copy)).problems
    assert "1 of the 2 weight files its index lists are missing (such as model-00002-of-00002.safetensors)" in problem
