"""The search engine's parts on their own: tokenizer, query limits, dense and lexical indexes, fusion."""
from __future__ import annotations

import numpy as np
import pytest

from search_engine.dense import DenseConfig, DenseIndex
from search_engine.fusion import FusionConfig, fuse
from search_engine.lexical import LexicalIndex
from search_engine.query import MAX_QUERY_CHARS, MAX_TOP_K, QueryError, validate_query
from search_engine.tokenize import tokenize


# ---- tokenize ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, expected",
    [
        ("Revenue grew 12.5% in 2019", ["revenue", "grew", "12.5", "2019"]),
        ("US$1,234.5 million (Q3)", ["us", "1234.5", "million", "q3"]),
        ("ＦＵＬＬ－ＷＩＤＴＨ ５０％", ["full", "width", "50"]),  # NFKC folds full-width forms
        ("What is the share of the market?", ["share", "market"]),  # English stop words dropped
        ("云栖大会", ["云栖", "栖大", "大会"]),  # CJK runs: overlapping bigrams
        ("VPC诞生", ["vpc", "诞生"]),
        ("云 的 年", ["云", "年"]),  # a lone character is a token unless it is a function character
        ("Japan's trips", ["japan", "trips"]),  # a possessive is the word itself
        ("China’s share", ["china", "share"]),  # curly apostrophe too
        ("don't", ["don't"]),  # other contractions stay whole
    ],
)
def test_tokenize(text, expected):
    assert tokenize(text) == expected


def test_tokenize_keeps_everything_when_asked():
    assert tokenize("the 的", stopwords=False) == ["the", "的"]
    assert tokenize("数据中心", stopwords=False) == ["数据", "据中", "中心"]


# ---- query limits --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "query, top_k, message",
    [
        ("", 10, "empty"),
        ("  \n\t ", 10, "empty"),
        ("x" * 100_000, 10, f"maximum is {MAX_QUERY_CHARS:,}"),
        ("ok", 0, "between 1 and"),
        ("ok", 10_000, "between 1 and"),
        ("ok", -3, "between 1 and"),
        ("ok", "5", "integer"),
        ("ok", True, "integer"),
        (None, 10, "string"),
    ],
)
def test_bad_queries_are_refused_with_a_reason(query, top_k, message):
    with pytest.raises(QueryError, match=message):
        validate_query(query, top_k)


def test_good_query_is_stripped():
    assert validate_query("  revenue 2019 \n", MAX_TOP_K) == "revenue 2019"
    assert validate_query("y" * MAX_QUERY_CHARS, 1) == "y" * MAX_QUERY_CHARS


# ---- dense ---------------------------------------------------------------------------------------
def _vectors(n: int, dim: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_dense_finds_each_vector_itself_and_forgets_removed_ones(kind, tmp_path):
    vectors = _vectors(500)
    dense = DenseIndex(32, DenseConfig(kind=kind))
    dense.add(np.arange(1000, 1500), vectors)
    scores, ids = dense.search(vectors[:20], 3)
    assert (ids[:, 0] == np.arange(1000, 1020)).all()
    assert np.allclose(scores[:, 0], 1.0, atol=1e-5)  # cosine of a vector with itself

    dense.remove([1000, 1001, 9999])  # an unknown id is ignored
    assert len(dense) == 498
    _, ids = dense.search(vectors[:2], 5)
    assert 1000 not in ids and 1001 not in ids

    dense.save(tmp_path / "dense.npz")
    again = DenseIndex.load(tmp_path / "dense.npz", DenseConfig(kind=kind))
    assert again.kind == kind and len(again) == 498
    assert (again.search(vectors[2:10], 3)[1] == dense.search(vectors[2:10], 3)[1]).all()


def test_dense_auto_switches_to_hnsw_above_exact_max():
    dense = DenseIndex(32, DenseConfig(kind="auto", exact_max=100))
    dense.add(np.arange(100), _vectors(100))
    assert dense.kind == "flat"
    dense.add(np.arange(100, 150), _vectors(50, seed=1))
    assert dense.kind == "hnsw" and len(dense) == 150
    _, ids = dense.search(_vectors(100)[:5], 1)
    assert (ids[:, 0] == np.arange(5)).all()


def test_dense_hnsw_compacts_after_many_removals():
    dense = DenseIndex(32, DenseConfig(kind="hnsw", compact_ratio=0.2))
    dense.add(np.arange(100), _vectors(100))
    dense.remove(np.arange(10))
    assert len(dense.ids(include_removed=True)) == 100  # tombstones, not yet compacted
    dense.remove(np.arange(10, 25))
    assert len(dense.ids(include_removed=True)) == 75  # compacted: tombstones gone
    assert set(dense.search(_vectors(100)[25:26], 75)[1][0]) == set(range(25, 100))


def test_dense_refuses_reused_ids_and_wrong_shapes():
    dense = DenseIndex(8, DenseConfig(kind="flat"))
    dense.add([1, 2], _vectors(2, 8))
    with pytest.raises(ValueError, match="new and unique"):
        dense.add([2], _vectors(1, 8))
    with pytest.raises(ValueError, match="dim 8"):
        dense.add([3], _vectors(1, 9))


def test_dense_search_on_an_empty_index():
    scores, ids = DenseIndex(8).search(_vectors(2, 8), 4)
    assert ids.shape == (2, 4) and (ids == -1).all()


# ---- lexical -------------------------------------------------------------------------------------
def test_bm25_ranks_rare_matching_terms_first():
    lexical = LexicalIndex()
    lexical.add(1, tokenize("outbound travel market in APAC by 2020"))
    lexical.add(2, tokenize("credit card penetration in Singapore is 34%"))
    lexical.add(3, tokenize("travel agents and travel apps in China"))
    scores, ids = lexical.search(tokenize("credit card penetration Singapore"), 10)
    assert list(ids) == [2] and scores[0] > 0
    assert list(lexical.search(tokenize("travel"), 10)[1]) == [3, 1]  # more "travel" in page 3
    lexical.remove(3)
    assert list(lexical.search(tokenize("travel"), 10)[1]) == [1]
    assert len(lexical.search(tokenize("nothing matches"), 10)[1]) == 0


def test_bm25_on_empty_and_textless_pages():
    lexical = LexicalIndex()
    assert len(lexical.search(["x"], 5)[1]) == 0
    lexical.add(7, [])
    assert len(lexical.search(["x"], 5)[1]) == 0


# ---- fusion --------------------------------------------------------------------------------------
def _ranking(pairs):
    return np.array([s for _, s in pairs], np.float32), np.array([i for i, _ in pairs], np.int64)


def test_score_fusion_lets_a_clear_lexical_winner_beat_a_flat_dense_ranking():
    rankings = {
        "dense": _ranking([(1, 0.62), (2, 0.61), (3, 0.40)]),  # nearly flat at the top
        "lexical": _ranking([(2, 9.0), (3, 1.0)]),
    }
    _, ids = fuse(rankings, FusionConfig(method="score"), 3)
    assert list(ids) == [2, 1, 3]


def test_rrf_uses_ranks_only():
    rankings = {"dense": _ranking([(1, 0.9), (2, 0.1)]), "lexical": _ranking([(2, 50.0), (1, 49.0)])}
    scores, ids = fuse(rankings, FusionConfig(method="rrf", rrf_k=60), 2)
    assert np.isclose(scores[0], scores[1])  # each page is once first, once second


def test_fusion_rejects_unknown_methods():
    with pytest.raises(ValueError, match="unknown fusion"):
        fuse({}, FusionConfig(method="magic"), 3)


@pytest.mark.parametrize("method", ["score", "rrf"])
def test_fusion_is_the_weighted_sum_its_docstring_defines(method):
    """fuse against the formula written out page by page: ties (equal scores are common with
    min-max scaling) keep the order in which pages first appear, dense ranking first."""
    rng = np.random.default_rng(11)
    config = FusionConfig(method=method, weights={"dense": 0.7, "lexical": 1.0})
    for _ in range(300):
        rankings = {}
        for name in ("dense", "lexical"):
            n = int(rng.integers(0, 25))
            scores = np.sort(rng.choice([0.5, 1.0, 2.0], n) if rng.random() < 0.5 else rng.random(n))[::-1]
            rankings[name] = (scores.astype(np.float32), rng.choice(50, n, replace=False).astype(np.int64))
        expected: dict[int, float] = {}
        for name, (scores, ids) in rankings.items():
            low, high = (float(scores.min()), float(scores.max())) if len(ids) else (0.0, 0.0)
            for rank, (score, page) in enumerate(zip(scores, ids), start=1):
                if method == "rrf":
                    value = config.weights[name] / (config.rrf_k + rank)
                else:
                    value = config.weights[name] * ((float(score) - low) / (high - low) if high > low else 1.0)
                expected[int(page)] = expected.get(int(page), 0.0) + value
        best = sorted(expected.items(), key=lambda item: -item[1])[:12]
        scores, ids = fuse(rankings, config, 12)
        assert ids.tolist() == [p for p, _ in best]
        np.testing.assert_allclose(scores, [v for _, v in best], rtol=1e-6)


def test_stored_term_counts_score_exactly_like_the_in_memory_bm25():
    """store.encode_terms + term_frequency_table + bm25.bm25 (the local backend's re-scoring of tantivy's
    candidates) give LexicalIndex's scores, including terms a page lacks and repeated query terms."""
    from search_engine.bm25 import bm25
    from search_engine.store import encode_terms, term_frequency_table, term_hash

    rng = np.random.default_rng(5)
    vocab = [f"w{i}" for i in range(200)] + ["云栖", "12.5", "don't"]
    docs = [list(rng.choice(vocab, size=int(rng.integers(0, 300)))) for _ in range(60)]
    ours = LexicalIndex(k1=0.9, b=0.4)
    for i, d in enumerate(docs):
        ours.add(i, d)
    encoded = [encode_terms(d) for d in docs]
    assert all(length == len(d) for (length, _), d in zip(encoded, docs))
    mean = float(np.mean([len(d) for d in docs]))
    for q in range(20):
        query = sorted(set(np.random.default_rng(q).choice(vocab, size=4).tolist() + ["absent"]))
        ids = np.array([term_hash(t) for t in query], np.uint64)
        tf = term_frequency_table([blob for _, blob in encoded], ids)  # all pages at once, as the backend reads them
        assert tf[:, query.index("absent")].sum() == 0
        df = np.array([sum(t in d for d in docs) for t in query], np.float32)
        scores = bm25(tf, np.array([n for n, _ in encoded]), df, len(docs), mean, 0.9, 0.4)
        expected_scores, expected_ids = ours.search(query, 60)
        np.testing.assert_allclose(scores[expected_ids], expected_scores, rtol=1e-5)
        assert set(np.flatnonzero(scores > 0)) == set(expected_ids.tolist())


# ---- tantivy BM25 with filler terms ----------------------------------------------------------------
def test_tantivy_with_filler_terms_ranks_like_bm25_with_our_b(tmp_path):
    """lexical_tantivy.padding: tantivy (b = 0.75 built in) plus filler terms ranks like BM25 with b = 0.4."""
    from search_engine.lexical_tantivy import TantivyLexical, padding

    rng = np.random.default_rng(3)
    vocab = [f"w{i}" for i in range(300)]
    docs = [list(rng.choice(vocab, size=int(rng.integers(5, 400)), p=np.r_[[0.3], np.full(299, 0.7 / 299)])) for _ in range(400)]
    pad = padding(float(np.mean([len(d) for d in docs])), 0.4)
    ours, tantivy_index = LexicalIndex(k1=1.2, b=0.4), TantivyLexical(tmp_path / "lexical")
    plain = TantivyLexical(tmp_path / "plain")
    for i, d in enumerate(docs):
        ours.add(i, d)
        tantivy_index.add(i, d, pad)
        plain.add(i, d)
    tantivy_index.commit()
    plain.commit()
    def agreement(index) -> tuple[int, float]:
        """(queries with the same top hit, mean overlap of the top 5) against BM25 with b = 0.4."""
        top1, top5 = 0, []
        for q in range(40):
            query = list(np.random.default_rng(q).choice(vocab[1:], size=3))
            expected, got = list(ours.search(query, 5)[1]), list(index.search(query, 5)[1])
            top1 += expected[:1] == got[:1]
            top5.append(len(set(expected) & set(got)) / 5)
        return top1, float(np.mean(top5))

    padded, unpadded = agreement(tantivy_index), agreement(plain)
    # tantivy stores page lengths in one byte (coarse above 40 tokens), so near-ties can swap;
    # unpadded tantivy agrees no better with its own b = 0.75 in plain BM25 (checked: 38/40, 0.96)
    assert padded[0] >= 36 and padded[1] >= 0.9, padded
    assert padded[1] > unpadded[1] and padded[0] >= unpadded[0], (padded, unpadded)


def test_tantivy_add_remove_and_reopen(tmp_path):
    from search_engine.lexical_tantivy import TantivyLexical

    lexical = TantivyLexical(tmp_path / "lex")
    lexical.add(1, tokenize("outbound travel market in APAC by 2020"))
    lexical.add(2, tokenize("credit card penetration in Singapore is 34%"))
    lexical.add(3, tokenize("阿里云数据中心网络"))
    lexical.commit()
    assert list(lexical.search(tokenize("credit card"), 10)[1]) == [2]
    assert list(lexical.search(tokenize("数据中心"), 10)[1]) == [3]
    lexical.add(3, tokenize("replaced text"))  # same vid: replaced, not duplicated
    lexical.remove(1)
    lexical.close_writer()
    again = TantivyLexical(tmp_path / "lex")
    assert len(again) == 2 and list(again.search(tokenize("replaced"), 5)[1]) == [3]
    assert len(again.search(tokenize("travel 数据中心"), 5)[1]) == 0


# ---- the dense checkpoint and its log -----------------------------------------------------------------
def test_dense_store_checkpoint_delta_and_replay(tmp_path):
    """New vectors go to an exact delta; a checkpoint folds them into a memory-mapped HNSW graph; a
    fresh process replays the log after the checkpoint (what a kill leaves)."""
    from search_engine.dense_store import DenseStore
    from search_engine.store import Chunk, IndexStore, SourceState
    from search_engine.types import Page

    store = IndexStore(tmp_path)
    store.create({})
    vectors = _vectors(300, dim=16)

    def commit(first: int, n: int) -> None:
        pages = [Page(f"p_{i}", "/s.pdf", i + 1, "", 10, 10, "pdf") for i in range(first, first + n)]
        store.commit_pages([(SourceState("/s.pdf", "x", 1, 1, 300, first + n, False, "p"), list(range(first, first + n)),
                             pages, vectors[first : first + n], [["w"]] * n)])

    config = DenseConfig(kind="auto", exact_max=100)
    dense = DenseStore(store, config, checkpoint_every=150)
    commit(0, 120)
    dense.load()
    assert dense.base is not None and len(dense) == 120  # rebuilt from the records
    dense.maybe_checkpoint()  # never written: written now
    assert (tmp_path / "dense.json").exists() and dense.base.kind == "hnsw"
    commit(120, 100)
    dense.catch_up()
    assert len(dense.delta) == 100 and len(dense) == 220  # the checkpoint is not rewritten for 100 vectors
    _, ids = dense.search(vectors[150], 1)
    assert ids[0] == 150  # found in the delta

    fresh = DenseStore(store, config, checkpoint_every=150)
    fresh.load()  # a new process: the mapped checkpoint + the log after it
    assert fresh._mapped and len(fresh) == 220 and fresh.search(vectors[5], 1)[1][0] == 5
    store.delete_page("p_5")
    fresh.catch_up()  # a tombstone for the mapped graph
    assert 5 not in fresh.search(vectors[5], 10)[1] and len(fresh) == 219
    commit(220, 80)
    fresh.catch_up()
    assert fresh.maybe_checkpoint()  # 80 + 1 pending: past 150? no, 180 delta vectors now
    again = DenseStore(store, config)
    again.load()
    assert again.delta is None and len(again) == 299 and again.search(vectors[250], 1)[1][0] == 250
    assert len(list(tmp_path.glob("dense-*.faiss"))) == 1  # the old checkpoint is gone


@pytest.mark.parametrize("kind", ["hnsw", "flat"])
def test_a_checkpoints_vectors_start_where_the_prefetch_stops(tmp_path, kind):
    """dense.prefetch_mapped reads a cold checkpoint up to its vectors and leaves those to the kernel's
    background read; `graph_bytes` finds them from the header. Checked on FAISS's own file: if its
    format moves, this fails (the prefetch would only read the wrong part, never change a result)."""
    from search_engine.dense import graph_bytes, normalise, prefetch_mapped

    vectors = _vectors(300, dim=24)
    index = DenseIndex(24, DenseConfig(kind=kind))
    index.add(np.arange(300) * 7, vectors)
    path = tmp_path / "dense.faiss"
    index.write(path)
    data = path.read_bytes()
    start = graph_bytes(data[:16], len(data))
    np.testing.assert_array_equal(np.frombuffer(data, np.float32, 300 * 24, offset=start).reshape(300, 24), normalise(vectors))
    assert graph_bytes(b"not a faiss file", 10_000) is None
    prefetch_mapped(path)  # and the index reads as before
    assert DenseIndex.read(path, mmap=kind == "hnsw").search(vectors[3], 1)[1][0][0] == 21
    (tmp_path / "short").write_bytes(b"IxM2")
    prefetch_mapped(tmp_path / "short")  # too short to say: left alone, no error
    prefetch_mapped(tmp_path / "missing")
