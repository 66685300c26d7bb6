"""The search engine on the 25 real demo pages (image-only slides, English and Chinese, all text by OCR)."""
from __future__ import annotations

from pathlib import Path

import pytest

from search_engine import MAX_TOP_K, QueryError


def test_all_25_pages_are_ingested_with_ocr_text(demo_index, demo_corpus):
    pages = {p.page_id: p for p in demo_index.pages()}
    assert sorted(pages) == sorted(f.stem for f in demo_corpus.glob("*.jpg"))
    for page in pages.values():
        assert page.text_source == "ocr" and page.text.strip(), page.page_id
        assert Path(page.image_file).is_file() and Path(page.image_file).parent.parent == demo_index.folder
    assert "APSARA" in pages["aliyun4_2"].text and "数据中心网络" in pages["aliyun4_2"].text


def test_page_images_are_kept_at_full_resolution(demo_index, demo_corpus):
    image = demo_index.page_image("aliyun4_2")
    assert image.size == (5334, 3000) == (demo_index.page("aliyun4_2").width, demo_index.page("aliyun4_2").height)
    # a JPEG source is stored byte for byte
    assert Path(demo_index.page("slide_3_1024").image_file).read_bytes() == (demo_corpus / "slide_3_1024.jpg").read_bytes()


def test_ocr_boxes_sit_on_the_printed_text(demo_index):
    page = demo_index.page("slide_3_1024")
    box = next(b for b in page.boxes if "OUTBOUND TRAVEL MARKET" in b.text)
    x1, y1, x2, y2 = box.box
    assert 0 <= x1 < x2 <= page.width and 0 <= y1 < y2 <= page.height
    assert y2 < 150  # the title is at the top of the slide
    assert box.confidence > 0.8


@pytest.mark.parametrize(
    "query, page_id",
    [
        ("How many million outbound trips will China make in 2020? 134", "slide_3_1024"),
        ("credit card penetration in Singapore", "slide_17_1024"),
    ],
)
def test_a_value_on_a_slide_finds_that_slide_in_the_top_3(demo_index, query, page_id):
    hits = demo_index.search(query, top_k=3)
    assert page_id in [h.page_id for h in hits], [h.page_id for h in hits]


@pytest.mark.parametrize(
    "query, page_id",
    [("增强型NAT网关", "aliyun4_4"), ("企业多分支上云对网络有什么要求", "aliyun4_5"), ("彭昔敏的职务", "aliyun4_1")],
)
def test_a_chinese_query_finds_the_right_aliyun_page(demo_index, query, page_id):
    assert demo_index.search(query, top_k=1)[0].page_id == page_id


def test_hits_carry_ranks_scores_and_page_metadata(demo_index):
    hits = demo_index.search("travel market in Asia Pacific", top_k=10)
    assert [h.rank for h in hits] == list(range(1, 11))
    assert all(a.score >= b.score for a, b in zip(hits, hits[1:]))
    assert len({h.page_id for h in hits}) == 10
    top = hits[0]
    page = demo_index.page(top.page_id)
    assert (top.image_file, top.source, top.page) == (page.image_file, page.source, 1)
    assert set(top.scores) <= {"dense", "lexical"} and "dense" in top.scores
    for mode in ("dense", "lexical"):
        own = demo_index.search("travel market in Asia Pacific", top_k=5, mode=mode)
        assert own and all(set(h.scores) == {mode} for h in own)


@pytest.mark.parametrize("query, top_k", [("", 10), ("   ", 10), ("x" * 100_000, 10), ("ok", 0), ("ok", 10_000)])
def test_bad_queries_raise_query_error(demo_index, query, top_k):
    with pytest.raises(QueryError):
        demo_index.search(query, top_k=top_k)


def test_unknown_mode_and_limits(demo_index):
    with pytest.raises(QueryError, match="unknown search mode"):
        demo_index.search("travel", mode="visual")
    assert len(demo_index.search("travel", top_k=MAX_TOP_K)) == 25  # never more than the pages there are
