"""A tiny, randomly initialised Qwen2.5-VL saved as a model folder, for tests and benchmarks.

No vision-language weights can be downloaded here, so the transformers code paths (policy,
attention re-forward) are exercised on a model with the real architecture, the real Qwen2.5
tokenizer and the real chat template, but a few small layers of random weights. Its replies are
gibberish by construction; it proves plumbing, shapes and memory behaviour, never quality.

The folder has the file layout of the released checkpoints (config.json, generation_config.json,
model.safetensors, tokenizer.json, tokenizer_config.json, preprocessor_config.json with
min_pixels/max_pixels, chat_template.json), so code loads it by path exactly like a user's folder.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

from agent.protocol import MAX_PIXELS, MIN_PIXELS
from agent.qwen_processor import QWEN25_VL_CHAT_TEMPLATE, ImageOnlyQwenVLProcessor, build_qwen25_processor

# Qwen2.5-VL's real embedding table is padded to 151,936 rows (> the 151,665 tokens).
PADDED_VOCAB = 151_936


def tiny_config(num_layers: int = 2, hidden_size: int = 64, num_heads: int = 4, num_kv_heads: int = 2, vision_depth: int = 2) -> Qwen2_5_VLConfig:
    """A Qwen2.5-VL config with the real token ids and patch geometry but tiny widths and depths."""
    head_dim = hidden_size // num_heads
    half = head_dim // 2  # mrope splits half the rotary dims into (temporal, height, width) sections
    mrope = [half - 2 * (half // 3), half // 3, half // 3]
    return Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=PADDED_VOCAB,
            hidden_size=hidden_size,
            intermediate_size=2 * hidden_size,
            num_hidden_layers=num_layers,
            num_attention_heads=num_heads,
            num_key_value_heads=num_kv_heads,
            max_position_embeddings=32768,
            rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": mrope},
        ),
        vision_config=dict(
            depth=vision_depth,
            hidden_size=32,
            intermediate_size=64,
            num_heads=2,
            out_hidden_size=hidden_size,
            fullatt_block_indexes=[vision_depth - 1],
            window_size=112,
        ),
        tie_word_embeddings=True,
    )


def save_processor_files(processor: ImageOnlyQwenVLProcessor, folder: str | os.PathLike) -> None:
    """Write the tokenizer, image processor and chat template as the released checkpoints lay them out."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    processor.tokenizer.save_pretrained(folder)
    for leftover in ("chat_template.jinja",):  # the template goes to chat_template.json, as released
        (folder / leftover).unlink(missing_ok=True)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    config["processor_class"] = "Qwen2_5_VLProcessor"
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    size = processor.image_processor.size
    preprocessor = {
        "min_pixels": size.shortest_edge,
        "max_pixels": size.longest_edge,
        "patch_size": 14,
        "temporal_patch_size": 2,
        "merge_size": 2,
        "image_mean": list(processor.image_processor.image_mean),
        "image_std": list(processor.image_processor.image_std),
        "image_processor_type": "Qwen2VLImageProcessor",
        "processor_class": "Qwen2_5_VLProcessor",
    }
    (folder / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=2))
    (folder / "chat_template.json").write_text(json.dumps({"chat_template": QWEN25_VL_CHAT_TEMPLATE}, indent=2))


def save_tiny_model(folder: str | os.PathLike, processor: ImageOnlyQwenVLProcessor | None = None, seed: int = 0, **config_kwargs) -> Path:
    """Build a tiny random Qwen2.5-VL (see `tiny_config`) and save it with its processor to `folder`.

    Pass a processor to reuse one: building the tokenizer from tiktoken ranks takes a few seconds.
    """
    folder = Path(folder)
    processor = processor or build_qwen25_processor(min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS)
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(tiny_config(**config_kwargs)).eval()
    model.generation_config.eos_token_id = [processor.tokenizer.convert_tokens_to_ids("<|im_end|>"), processor.tokenizer.convert_tokens_to_ids("<|endoftext|>")]
    model.generation_config.pad_token_id = processor.tokenizer.convert_tokens_to_ids("<|endoftext|>")
    model.save_pretrained(folder)
    save_processor_files(processor, folder)
    return folder
