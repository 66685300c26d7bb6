"""Similarity maps from the tiny random ColQwen2 on pages of several aspect ratios: the map's grid
is the processor's patch grid, and a planted match lands on the planted page pixels."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from search_engine.embedders import load_embedder
from search_engine.multivector_search import maxsim
from search_engine.similarity_maps import cell_box, page_similarities, similarity_map, token_similarities
from support.tiny_visual import tiny_colqwen2_dir

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def colqwen(tmp_path_factory):
    return load_embedder("colqwen2", str(tiny_colqwen2_dir(tmp_path_factory.mktemp("models"))))


@pytest.mark.parametrize("size", [(600, 800), (1200, 400), (300, 300), (1024, 576)])
def test_map_shape_is_the_processors_patch_grid(colqwen, size, demo_corpus):
    with Image.open(demo_corpus / "slide_3_1024.jpg") as page:
        image = page.convert("RGB").resize(size)
    found = page_similarities(colqwen, image, "revenue by region")
    thw = colqwen.inputs.image_processor(images=[image], return_tensors="np")["image_grid_thw"][0]
    assert found.grid == (thw[1] // 2, thw[2] // 2)
    assert found.sims.shape == (len(found.tokens), *found.grid)
    drawn = similarity_map(found.sims, *size, token=0)
    assert drawn.values.shape == found.grid and drawn.extent == (0, 0, *size)
    q = colqwen.encode_query("revenue by region")
    assert found.score == pytest.approx(maxsim(q, colqwen.encode_page_patches([image])[0].vectors), rel=1e-5)


def test_a_planted_query_token_lands_on_the_planted_pixels(colqwen, demo_corpus):
    with Image.open(demo_corpus / "aliyun4_1.jpg") as page:
        image = page.convert("RGB")
    patches = colqwen.encode_page_patches([image])[0]
    query = colqwen.encode_query_tokens("SLA of the NAT gateway")
    rows, cols = patches.grid
    planted = patches.vectors.copy()
    row, col = rows // 3, cols - 2
    planted[row * cols + col] = query.vectors[1]
    drawn = similarity_map(token_similarities(query.vectors, planted, patches.grid), *image.size, token=1)
    assert np.unravel_index(drawn.values.argmax(), drawn.values.shape) == (row, col)
    x0, y0, x1, y1 = cell_box(patches.grid, drawn.extent, row, col)
    assert x0 < image.width * (col + 0.5) / cols < x1 and y0 < image.height * (row + 0.5) / rows < y1
    assert x1 <= image.width and y1 <= image.height
