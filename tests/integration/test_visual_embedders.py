"""The visual embedders on tiny random models built from configs (tests/support/tiny_visual.py):
real colpali-engine ColQwen2 model code, the real Qwen2.5 tokenizer, the PIL image processor."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from search_engine.embedders import EmbedderError, load_embedder
from support.tiny_visual import tiny_colqwen25_dir, tiny_colqwen2_dir, tiny_vlm_embed_dir

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def colqwen(tmp_path_factory):
    return load_embedder("colqwen2", str(tiny_colqwen2_dir(tmp_path_factory.mktemp("models"))))


def _pages():
    return [Image.new("RGB", (600, 800), "white"), Image.new("RGB", (1200, 400), (200, 30, 30)),
            Image.new("RGB", (300, 300), (10, 120, 10))]


def test_colqwen2_pages_are_unit_multivectors_on_the_patch_grid(colqwen):
    pages = colqwen.encode_page_patches(_pages())
    stored = colqwen.encode_images(_pages())
    assert colqwen.multivector and colqwen.dim == 128
    for patches, vectors, image in zip(pages, stored, _pages()):
        rows, cols = patches.grid
        assert patches.vectors.shape == (rows * cols, 128) and vectors.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
        # the grid keeps the page's aspect ratio (up to one 28-px block)
        assert abs(cols / rows - image.width / image.height) < 0.5 * image.width / image.height
    # the PIL processor's smart_resize at <= 64 tokens: 600x800 -> 18x12 patches -> 9x6 tokens, ...
    assert [p.grid for p in pages] == [(9, 6), (4, 13), (7, 7)]


def test_colqwen2_query_tokens_and_their_strings(colqwen):
    query = colqwen.encode_query_tokens("NAT gateway SLA")
    assert query.vectors.shape == (len(query.tokens), 128)
    assert "".join(query.tokens).startswith("NAT gateway SLA") and query.tokens[-1] == "<|endoftext|>"
    np.testing.assert_allclose(colqwen.encode_query("NAT gateway SLA"), query.vectors, atol=1e-6)


def test_colqwen25_runs_the_same_way(tmp_path):
    embedder = load_embedder("colqwen2.5", str(tiny_colqwen25_dir(tmp_path)))
    [page] = embedder.encode_page_patches(_pages()[:1])
    assert page.grid == (9, 6) and page.vectors.shape == (54, 128)
    query = embedder.encode_query("storage")
    assert query.shape[1] == 128 and np.isfinite(query).all()


def test_token_pooling_shrinks_what_is_stored(tmp_path_factory):
    folder = tiny_colqwen2_dir(tmp_path_factory.mktemp("models"))
    pooled = load_embedder("colqwen2", str(folder), pool_factor=3).encode_images(_pages()[:1])[0]
    full = load_embedder("colqwen2", str(folder)).encode_images(_pages()[:1])[0]
    assert pooled.shape[0] == max(full.shape[0] // 3, 1) and pooled.shape[1] == 128
    np.testing.assert_allclose(np.linalg.norm(pooled, axis=1), 1.0, atol=1e-5)


def test_single_vector_vlm_embedder_last_and_mean_pooling(tmp_path):
    folder = str(tiny_vlm_embed_dir(tmp_path))
    for pooling in ("last", "mean"):
        embedder = load_embedder("vlm-embed", folder, pooling=pooling)
        pages = embedder.encode_images(_pages())
        assert not embedder.multivector and pages.shape == (3, embedder.dim) == (3, 64)
        np.testing.assert_allclose(np.linalg.norm(pages, axis=1), 1.0, atol=1e-5)
        query = embedder.encode_query("a red page")
        assert query.shape == (64,) and not np.allclose(pages[0], pages[1])


@pytest.mark.parametrize("name, hub_id", [("colqwen2", "vidore/colqwen2-v1.0"), ("vlm-embed", "Alibaba-NLP/GVE-3B")])
def test_without_weights_it_fails_at_once_naming_the_model(tmp_path, name, hub_id):
    import time

    started = time.perf_counter()
    with pytest.raises(EmbedderError) as error:
        load_embedder(name)
    assert hub_id in str(error.value) and f"huggingface-cli download {hub_id}" in str(error.value)
    with pytest.raises(EmbedderError, match="huggingface-cli download someorg/my-finetune"):
        load_embedder(name, "someorg/my-finetune")  # a hub name, not in the cache, offline
    with pytest.raises(EmbedderError, match="holds no model"):
        load_embedder(name, str(tmp_path))
    with pytest.raises(EmbedderError, match="no model folder at"):
        load_embedder(name, str(tmp_path / "missing"))
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "adapter_config.json").write_text('{"base_model_name_or_path": "vidore/colqwen2-base"}')
    (tmp_path / "adapter" / "adapter_model.safetensors").write_bytes(b"")
    with pytest.raises(EmbedderError, match="LoRA adapter over vidore/colqwen2-base"):
        load_embedder(name, str(tmp_path / "adapter"))
    assert time.perf_counter() - started < 5
    with pytest.raises(EmbedderError, match="not supported"):
        load_embedder("colpali")


def test_precision_and_device_are_the_users(tmp_path_factory):
    import torch

    folder = str(tiny_colqwen2_dir(tmp_path_factory.mktemp("models")))
    half = load_embedder("colqwen2", folder, device="cpu", dtype="bfloat16")
    assert next(half._model.parameters()).dtype == torch.bfloat16 and half.device == "cpu"
    [page] = half.encode_images(_pages()[:1])
    assert page.dtype == np.float32 and page.shape == (54, 128)  # stored as float32 unit rows whatever the compute
    np.testing.assert_allclose(np.linalg.norm(page, axis=1), 1.0, atol=1e-5)
    with pytest.raises(EmbedderError, match="unknown precision 'int3'"):
        load_embedder("colqwen2", folder, dtype="int3")
