"""agent/page_decode.py: a page decoded down to a row gives exactly the rows a full decode gives."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from agent.page_decode import decode_top


def _full(path) -> np.ndarray:
    with Image.open(path) as image:
        image.load()
        return np.asarray(image.convert(image.mode))


def test_every_demo_page_decoded_to_a_row_is_the_full_decode_cut_there(demo_corpus):
    pages = sorted(demo_corpus.glob("*.jpg"))
    assert len(pages) == 25
    partial = 0
    for path in pages:
        full = _full(path)
        height, width = full.shape[:2]
        for rows in (1, 16, 17, height // 3, (2 * height) // 3 + 5, height - 1):
            top = decode_top(path, rows)
            got = np.asarray(top.image)
            assert top.size == (width, height) and top.image.mode == "RGB"
            assert rows <= got.shape[0] <= height
            assert np.array_equal(got, full[: got.shape[0]]), (path.name, rows)
            partial += not top.complete
    assert partial >= 5 * 6  # the five baseline pages stop early at every cut (the progressive slides decode whole)


def test_the_whole_page_and_rows_past_its_end_are_a_full_decode(demo_corpus):
    path = demo_corpus / "aliyun4_1.jpg"
    for rows in (None, 3000, 10_000):
        top = decode_top(path, rows)
        assert top.complete and np.array_equal(np.asarray(top.image), _full(path))


def test_bytes_and_other_formats_decode_too(demo_corpus, tmp_path):
    data = (demo_corpus / "aliyun4_2.jpg").read_bytes()
    top = decode_top(data, 700)
    assert top.image.height == 700 and np.array_equal(np.asarray(top.image), _full(io.BytesIO(data))[:700])
    png = tmp_path / "page.png"
    Image.open(io.BytesIO(data)).crop((0, 0, 400, 300)).save(png)
    top = decode_top(png, 10)  # not a JPEG: decoded whole
    assert top.complete and top.size == (400, 300)


def test_a_file_cut_short_before_the_rows_needed_is_an_error_not_a_blank_crop(demo_corpus):
    data = (demo_corpus / "aliyun4_3.jpg").read_bytes()
    cut = data[: len(data) // 3]
    assert decode_top(cut, 50).image.height == 50  # the top rows are all there
    with pytest.raises(OSError, match="truncated"):
        decode_top(cut, 2900)


def test_a_file_that_is_not_an_image_is_an_error(tmp_path):
    bad = tmp_path / "page.jpg"
    bad.write_bytes(b"this is not a JPEG")
    with pytest.raises(OSError):
        decode_top(bad, 10)
