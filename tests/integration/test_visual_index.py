"""A late-interaction index on demo pages: ingest with the tiny random ColQwen2, MaxSim search equal
to a direct computation, the candidate stage, reopening, removal, a killed writer's tail, fusion."""
from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pytest
from PIL import Image

from search_engine import DocumentIndex
from search_engine.config import IndexConfig
from search_engine.embedders import load_embedder
from search_engine.multivector_store import FILE
from support.tiny_visual import tiny_colqwen2_dir

pytestmark = pytest.mark.slow
PAGES = ("aliyun4_1.jpg", "aliyun4_2.jpg", "slide_1_1024.jpg", "slide_2_1024.jpg")


@pytest.fixture(scope="module")
def colqwen(tmp_path_factory):
    return load_embedder("colqwen2", str(tiny_colqwen2_dir(tmp_path_factory.mktemp("models"))))


@pytest.fixture(scope="module")
def built(tmp_path_factory, demo_corpus, colqwen):
    """A 4-page index, built once; tests copy it before changing it."""
    corpus = tmp_path_factory.mktemp("corpus")
    for name in PAGES:
        shutil.copy(demo_corpus / name, corpus / name)
    folder = tmp_path_factory.mktemp("index") / "visual"
    config = IndexConfig(embedder="colqwen2", model_path=colqwen.source, workers=0)
    index = DocumentIndex.open(folder, embedder=colqwen, config=config)
    report = index.ingest([corpus])
    assert len(report.added) == 4 and not report.skipped
    index.close()
    return folder, corpus, config


def _copy(built, tmp_path):
    folder, corpus, config = built
    shutil.copytree(folder, tmp_path / "index")
    return tmp_path / "index", corpus, config


def _direct(colqwen, index, query):
    """MaxSim of the query with every page, from a fresh embedding of each stored page image."""
    q = colqwen.encode_query(query)
    out = {}
    for page in index.pages():
        vectors = colqwen.encode_images([index.page_image(page.page_id)])[0]
        stored = vectors.astype(np.float16).astype(np.float32)  # the index keeps float16
        out[page.page_id] = (float(np.einsum("qd,nd->qn", q, stored).max(1).sum()),
                             float(np.einsum("qd,nd->qn", q, vectors).max(1).sum()))
    return out


def test_dense_search_scores_are_maxsim_and_survive_a_reopen(built, colqwen):
    folder, _, config = built
    index = DocumentIndex.open(folder, embedder=colqwen, config=config)
    hits = index.search("Elastic Compute Service instance types", top_k=4, mode="dense")
    direct = _direct(colqwen, index, "Elastic Compute Service instance types")
    assert sorted(h.page_id for h in hits) == sorted(direct)
    for hit in hits:
        assert hit.score == pytest.approx(direct[hit.page_id][0], rel=1e-4)
        assert hit.score == pytest.approx(direct[hit.page_id][1], abs=0.05)  # float16 storage costs little
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert index.backend.multi.bytes_per_page() == pytest.approx(np.mean(
        [len(colqwen.encode_images([index.page_image(h.page_id)])[0]) for h in hits]) * 128 * 2)
    fused = index.search("Elastic Compute Service", top_k=4)
    assert fused and all(set(h.scores) <= {"dense", "lexical"} for h in fused) and "dense" in fused[0].scores
    index.close()
    again = DocumentIndex.open(folder, embedder=colqwen)  # the stored config: colqwen2, its model path
    assert again.config.embedder == "colqwen2" and again.config.model_path == config.model_path
    same = again.search("Elastic Compute Service instance types", top_k=4, mode="dense")
    assert [(h.page_id, h.score) for h in same] == [(h.page_id, h.score) for h in hits]
    again.close()


def test_candidate_stage_reranks_mean_vector_candidates_exactly(built, colqwen, tmp_path):
    folder, _, config = _copy(built, tmp_path)
    index = DocumentIndex.open(folder, embedder=colqwen, config=config)
    query = colqwen.encode_query("network bandwidth")
    exact = index.backend.maxsim_search(query, 4, exact=True)
    index.close()
    staged_config = dataclasses.replace(config, maxsim_exact_max_pages=0, maxsim_candidates=2)
    staged = DocumentIndex.open(folder, embedder=colqwen, config=staged_config)  # search-time settings: no rebuild
    scores, vids = staged.backend.maxsim_search(query, 2)
    assert len(vids) == 2  # only the candidates were scored ...
    exact_of = dict(zip(exact[1].tolist(), exact[0].tolist()))
    for score, vid in zip(scores, vids):  # ... and scored exactly
        assert score == pytest.approx(exact_of[int(vid)], rel=1e-6)
    means = {int(v): staged.backend.store.vectors([int(v)])[int(v)] for v in exact[1]}
    q_mean = query.mean(0) / np.linalg.norm(query.mean(0))
    best_by_mean = sorted(means, key=lambda v: -float(means[v] @ q_mean))[:2]
    assert sorted(vids.tolist()) == sorted(best_by_mean)
    staged.close()


def test_removed_pages_leave_the_search_and_a_killed_writers_tail_is_dropped(built, colqwen, tmp_path):
    folder, corpus, config = _copy(built, tmp_path)
    index = DocumentIndex.open(folder, embedder=colqwen, config=config)
    size = (folder / FILE).stat().st_size
    assert index.remove(["slide_1_1024"]) == ["slide_1_1024"]
    assert "slide_1_1024" not in [h.page_id for h in index.search("slide", top_k=4, mode="dense")]
    assert index.backend.multi.dead_rows() > 0
    index.close()
    with open(folder / FILE, "ab") as f:  # a writer killed after appending, before its commit
        f.write(b"\x01" * 1000)
    index = DocumentIndex.open(folder, embedder=colqwen, config=config)
    with Image.open(corpus / "slide_2_1024.jpg") as image:
        image.rotate(180).save(corpus / "extra.jpg", quality=80)
    index.add([corpus / "extra.jpg"])
    grown = (folder / FILE).stat().st_size
    assert (grown - size) % 256 == 0  # the garbage tail was cut before the new rows
    hits = index.search("slide", top_k=5, mode="dense")
    direct = _direct(colqwen, index, "slide")
    assert {h.page_id: round(h.score, 3) for h in hits} == {p: round(s, 3) for p, (s, _) in direct.items()}
    (corpus / "extra.jpg").unlink()
    index.close()


def test_changing_the_pool_factor_rebuilds_with_fewer_vectors(built, colqwen, tmp_path):
    folder, _, config = _copy(built, tmp_path)
    index = DocumentIndex.open(folder, embedder=colqwen, config=config)
    full = index.backend.multi.counts.sum()
    index.close()
    pooled_embedder = load_embedder("colqwen2", config.model_path, pool_factor=4)
    pooled = DocumentIndex.open(folder, embedder=pooled_embedder, config=dataclasses.replace(config, pool_factor=4))
    assert len(pooled) == 4 and pooled.backend.multi.counts.sum() <= full // 4 + 4
    assert pooled.search("cloud", top_k=2, mode="dense")
    pooled.close()


def test_the_milvus_backend_refuses_a_late_interaction_embedder(tmp_path):
    with pytest.raises(ValueError, match="needs the local backend"):
        DocumentIndex.open(tmp_path / "m", config=IndexConfig(embedder="colqwen2", backend="milvus",
                                                              milvus_uri=str(tmp_path / "m.db")))


def test_a_single_vector_visual_index_embeds_page_images_into_faiss(tmp_path, demo_corpus):
    from support.tiny_visual import tiny_vlm_embed_dir

    embedder = load_embedder("vlm-embed", str(tiny_vlm_embed_dir(tmp_path)))
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name in PAGES[:2]:
        shutil.copy(demo_corpus / name, corpus / name)
    config = IndexConfig(embedder="vlm-embed", model_path=embedder.source, workers=0)
    index = DocumentIndex.open(tmp_path / "index", embedder=embedder, config=config)
    index.ingest([corpus])
    assert index.backend.multi is None and not (tmp_path / "index" / FILE).exists()
    hits = index.search("object storage pricing", top_k=2, mode="dense")
    query = embedder.encode_query("object storage pricing")
    for hit in hits:
        page = embedder.encode_images([index.page_image(hit.page_id)])[0]
        assert hit.score == pytest.approx(float(page @ query), abs=1e-4)
    index.close()
    again = DocumentIndex.open(tmp_path / "index", embedder=embedder)
    assert [(h.page_id, h.score) for h in again.search("object storage pricing", top_k=2, mode="dense")] == \
        [(h.page_id, h.score) for h in hits]
    again.close()


def test_a_reader_sees_pages_another_writer_committed(built, colqwen, tmp_path):
    folder, corpus, config = _copy(built, tmp_path)
    reader = DocumentIndex.open(folder, embedder=colqwen, config=config)
    before = {h.page_id for h in reader.search("cloud", top_k=10, mode="dense")}
    writer = DocumentIndex.open(folder, embedder=colqwen, config=config)
    extra = tmp_path / "more"
    extra.mkdir()
    with Image.open(corpus / "aliyun4_1.jpg") as image:
        image.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(extra / "flipped.jpg", quality=85)
    writer.add([extra])
    after = {h.page_id: h.score for h in reader.search("cloud", top_k=10, mode="dense")}
    assert set(after) == before | {"flipped"}
    direct = _direct(colqwen, reader, "cloud")
    assert after["flipped"] == pytest.approx(direct["flipped"][0], rel=1e-4)
    writer.close()
    reader.close()
