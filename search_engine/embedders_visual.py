"""Visual page embedders: they read the page IMAGE, not its text.

- Late interaction ("colqwen2", "colqwen2.5"): ColQwen2 / ColQwen2.5 (colpali-engine's model classes,
  loaded as in colpali_modules.py). A page becomes one 128-d unit vector per image token, a
  (rows * cols, 128) float32 array in row-major patch-grid order (colqwen_processor.py: the grid);
  only the image tokens are kept (colpali-engine's `mask_non_image_embeddings=True`), so every stored
  row is a place on the page. A query becomes one vector per token, (q, 128). score(query, page) =
  MaxSim = sum over query tokens of the best dot product with any page vector (multivector_search.py).
  `pool_factor` > 1 shrinks what is stored with colpali-engine's HierarchicalTokenPooler (about
  n / pool_factor cluster means per page; the patch grid is then lost, so similarity maps re-embed the
  page image: similarity_maps.py).
- Single vector ("vlm-embed"): the GVE / Qwen3-VL-Embedding recipe, a Qwen2-VL / Qwen2.5-VL model's
  last hidden states pooled to one unit vector ("last": the last token, "mean": the mean over the
  sequence), for the existing FAISS index.

Every embedder loads from a local model folder or a hub name, on `device` ("auto": CUDA if
available, else CPU) in `dtype` ("auto": bfloat16 on CUDA, float32 on CPU; or float32, bfloat16,
float16). Without weights it fails at once, before importing torch, with an EmbedderError naming the
model and how to get it (`model_source`).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .colpali_modules import import_module
from .colqwen_processor import QwenVisionInputs
from .embedder_errors import EmbedderError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VisualModel:
    """A visual embedder known by name: its hub id, its kind and (late interaction) its colpali-engine class."""

    name: str
    hub_id: str
    kind: str  # "multi" (late interaction, MaxSim) or "single" (one vector per page)
    module: str = ""
    cls: str = ""


VISUAL_MODELS = {
    "colqwen2": VisualModel("colqwen2", "vidore/colqwen2-v1.0-merged", "multi",
                            "colpali_engine.models.qwen2.colqwen2.modeling_colqwen2", "ColQwen2"),
    "colqwen2.5": VisualModel("colqwen2.5", "vidore/colqwen2.5-v0.2", "multi",
                              "colpali_engine.models.qwen2_5.colqwen2_5.modeling_colqwen2_5", "ColQwen2_5"),
    "vlm-embed": VisualModel("vlm-embed", "Alibaba-NLP/GVE-3B", "single"),
}
# ColPali (PaliGemma) is not offered: its processor needs transformers' SigLIP image processor, and
# nothing here could test it. The Milvus backend stores one vector per page: it refuses "multi" kinds.
REFUSED = {"colpali": "ColPali (PaliGemma) is not supported by this version; use colqwen2 (the model the VRAG paper uses)"}


def is_multivector(name: str) -> bool:
    return name in VISUAL_MODELS and VISUAL_MODELS[name].kind == "multi"


def how_to_get(model: VisualModel) -> str:
    package = "colpali-engine (pip install --no-deps -r requirements-nodeps.txt) and " if model.kind == "multi" else ""
    return (f"the '{model.name}' embedder needs {package}the weights of {model.hub_id} (or a compatible model): run "
            f"`huggingface-cli download {model.hub_id}` on a machine with internet (it fills the Hugging Face "
            f"cache), or copy the model folder here and pass it as the model path (--model-path DIR). "
            f"Without a GPU expect seconds per page.")


def model_source(model: VisualModel, model_path: str | None) -> str:
    """A loadable folder or hub id for `model`, checked without loading anything; EmbedderError if the
    weights are not here (a folder without config and weights, or a hub id absent from the cache while
    HF_HUB_OFFLINE is set)."""
    if model_path:
        folder = Path(model_path).expanduser()
        looks_like_hub_id = model_path.count("/") == 1 and not model_path.startswith(("/", ".", "~"))
        if folder.exists() or not looks_like_hub_id:
            if not folder.is_dir():
                raise EmbedderError(f"no model folder at {model_path}; {how_to_get(model)}")
            adapter = folder / "adapter_config.json"
            if adapter.is_file() and not (folder / "config.json").is_file():
                try:
                    base = json.loads(adapter.read_text()).get("base_model_name_or_path", "its base model")
                except (OSError, ValueError):
                    base = "its base model"
                raise EmbedderError(f"{model_path} is a LoRA adapter over {base}, not a whole model; use merged "
                                    f"weights (for ColQwen2: vidore/colqwen2-v1.0-merged) or merge it with peft first")
            has_config = (folder / "config.json").is_file()
            has_weights = any(folder.glob("*.safetensors")) or any(folder.glob("*.bin"))
            if not (has_config and has_weights):
                raise EmbedderError(f"{model_path} holds no model (config.json and *.safetensors weights); {how_to_get(model)}")
            return str(folder)
        hub_id = model_path
    else:
        hub_id = model.hub_id
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(hub_id, "config.json")
    if isinstance(cached, str):
        return str(Path(cached).parent)
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        raise EmbedderError(f"{hub_id} is not in the Hugging Face cache and HF_HUB_OFFLINE is set; "
                            f"{how_to_get(dataclasses.replace(model, hub_id=hub_id))}")
    return hub_id  # transformers downloads it


def torch_device_dtype(device: str, dtype: str):
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if dtype == "auto":
        dtype = "bfloat16" if device.startswith("cuda") else "float32"
    if dtype not in ("float32", "bfloat16", "float16"):
        raise EmbedderError(f"unknown precision {dtype!r}; use auto, float32, bfloat16 or float16")
    return device, getattr(torch, dtype)


def _unit_rows(x: np.ndarray) -> np.ndarray:
    return (x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)).astype(np.float32)


@dataclass
class QueryTokens:
    """A query's token vectors (q, dim) float32 unit rows, and each token as text (for the map picker)."""

    vectors: np.ndarray
    tokens: list[str]


@dataclass
class PagePatches:
    """A page's image-token vectors (rows * cols, dim) float32, row-major over the (rows, cols) patch grid."""

    vectors: np.ndarray
    grid: tuple[int, int]


class LateInteractionEmbedder:
    """ColQwen2 / ColQwen2.5 multi-vector page embedder (see the module docstring)."""

    modality = "image"
    multivector = True

    def __init__(self, name: str = "colqwen2", model_path: str | None = None, device: str = "auto",
                 dtype: str = "auto", pool_factor: int = 1, batch_size: int = 4):
        if name not in VISUAL_MODELS or VISUAL_MODELS[name].kind != "multi":
            raise EmbedderError(f"{name!r} is not a late-interaction embedder; choose one of "
                                f"{[n for n, m in VISUAL_MODELS.items() if m.kind == 'multi']}")
        if pool_factor < 1:
            raise EmbedderError(f"pool_factor must be 1 (no pooling) or more, got {pool_factor}")
        model = VISUAL_MODELS[name]
        source = model_source(model, model_path)  # fails here, before torch, without weights
        try:
            import torch

            model_cls = getattr(import_module(model.module), model.cls)
        except ImportError as e:
            raise EmbedderError(f"the '{name}' embedder needs colpali-engine: "
                                f"pip install --no-deps -r requirements-nodeps.txt ({e})") from e
        self.name, self.source, self.pool_factor, self.batch_size = name, source, pool_factor, batch_size
        self.device, torch_dtype = torch_device_dtype(device, dtype)
        try:
            self._model = model_cls.from_pretrained(source, dtype=torch_dtype).to(self.device).eval()
            self.inputs = QwenVisionInputs.from_folder(source)
        except (OSError, ValueError) as e:
            raise EmbedderError(f"could not load {source}: {e}\n{how_to_get(model)}") from e
        self._torch = torch
        self.dim = int(self._model.dim)
        self._pooler = None
        if pool_factor > 1:
            pooling = import_module("colpali_engine.compression.token_pooling.hierarchical_token_pooling")
            self._pooler = pooling.HierarchicalTokenPooler()

    def _forward(self, batch: dict):
        batch = {k: v.to(self.device) for k, v in batch.items()}
        with self._torch.no_grad():
            return self._model(**batch).float().cpu(), batch

    def encode_page_patches(self, images) -> list[PagePatches]:
        """Every page's image-token vectors with its patch grid (never pooled: for similarity maps)."""
        out: list[PagePatches] = []
        for start in range(0, len(images), self.batch_size):
            batch = self.inputs.pages(images[start : start + self.batch_size])
            vectors, batch = self._forward(batch)
            image = (batch["input_ids"] == self.inputs.image_token_id).cpu()
            for i, thw in enumerate(batch["image_grid_thw"].cpu()):
                rows, cols = self.inputs.grid(thw)
                page = vectors[i][image[i]].numpy()
                if page.shape[0] != rows * cols:
                    raise RuntimeError(f"{page.shape[0]} image tokens for a {rows}x{cols} patch grid")
                out.append(PagePatches(_unit_rows(page), (rows, cols)))
        return out

    def encode_images(self, images) -> list[np.ndarray]:
        """What the index stores per page: (n_i, dim) float32 unit rows (pooled when pool_factor > 1)."""
        pages = [p.vectors for p in self.encode_page_patches(images)]
        if self._pooler is None:
            return pages
        pooled = self._pooler.pool_embeddings([self._torch.from_numpy(p) for p in pages], pool_factor=self.pool_factor)
        return [_unit_rows(p.numpy()) for p in pooled]

    def encode_query_tokens(self, query: str) -> QueryTokens:
        batch = self.inputs.queries([query])
        vectors, batch = self._forward(batch)
        keep = batch["attention_mask"][0].bool().cpu()
        return QueryTokens(_unit_rows(vectors[0][keep].numpy()), self.inputs.token_strings(batch["input_ids"][0][keep]))

    def encode_query(self, query: str) -> np.ndarray:
        """(q, dim) float32: one unit vector per query token."""
        return self.encode_query_tokens(query).vectors

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        """One vector per text: the mean of its token vectors, normalised (what the candidate stage
        compares with the pages' mean vectors); (len(texts), dim)."""
        return _unit_rows(np.vstack([self.encode_query(t).mean(axis=0) for t in texts])) if texts \
            else np.zeros((0, self.dim), np.float32)


VLM_PAGE_PROMPT = "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Represent this page for retrieval.<|im_end|>\n<|endoftext|>"
VLM_QUERY_PROMPT = "<|im_start|>user\nFind the page that answers: {query}<|im_end|>\n<|endoftext|>"


class SingleVectorVlmEmbedder:
    """One vector per page from a Qwen2-VL / Qwen2.5-VL model (GVE / Qwen3-VL-Embedding style):
    the last hidden state of the last token (`pooling="last"`, left padding puts it at the end) or the
    mean over the unpadded sequence (`"mean"`), L2-normalised; dim = the model's hidden size."""

    modality = "image"
    multivector = False

    def __init__(self, name: str = "vlm-embed", model_path: str | None = None, device: str = "auto",
                 dtype: str = "auto", pooling: str = "last", batch_size: int = 4):
        if pooling not in ("last", "mean"):
            raise EmbedderError(f"unknown pooling {pooling!r}; use last or mean")
        model = VISUAL_MODELS[name]
        source = model_source(model, model_path)
        import torch
        import transformers

        self.name, self.source, self.pooling, self.batch_size = name, source, pooling, batch_size
        self.device, torch_dtype = torch_device_dtype(device, dtype)
        try:
            model_type = json.loads((Path(source) / "config.json").read_text()).get("model_type") \
                if Path(source).is_dir() else transformers.AutoConfig.from_pretrained(source).model_type
            classes = {"qwen2_vl": transformers.Qwen2VLForConditionalGeneration,
                       "qwen2_5_vl": transformers.Qwen2_5_VLForConditionalGeneration}
            if model_type not in classes:
                raise EmbedderError(f"{source} is a {model_type!r} model; the '{name}' embedder takes Qwen2-VL or Qwen2.5-VL")
            full = classes[model_type].from_pretrained(source, dtype=torch_dtype)
            self._model = full.model.to(self.device).eval()  # the backbone: hidden states, no LM head
            self.inputs = QwenVisionInputs.from_folder(source, page_prompt=VLM_PAGE_PROMPT, query_suffix="")
        except (OSError, ValueError) as e:
            raise EmbedderError(f"could not load {source}: {e}\n{how_to_get(model)}") from e
        self._torch = torch
        self.dim = int(full.config.get_text_config().hidden_size)

    def _pooled(self, batch: dict) -> np.ndarray:
        batch = {k: v.to(self.device) for k, v in batch.items()}
        with self._torch.no_grad():
            hidden = self._model(**batch, use_cache=False).last_hidden_state.float()
        if self.pooling == "last":
            pooled = hidden[:, -1]
        else:
            mask = batch["attention_mask"].unsqueeze(-1).float()
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
        return _unit_rows(pooled.cpu().numpy())

    def encode_images(self, images) -> np.ndarray:
        """(len(images), dim) float32 unit rows."""
        parts = [self._pooled(self.inputs.pages(images[s : s + self.batch_size], pad_pixels=False))
                 for s in range(0, len(images), self.batch_size)]
        return np.vstack(parts) if parts else np.zeros((0, self.dim), np.float32)

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        prompts = [VLM_QUERY_PROMPT.format(query=t) for t in texts]
        return np.vstack([self._pooled(self.inputs.queries(prompts[s : s + self.batch_size]))
                          for s in range(0, len(prompts), self.batch_size)])

    def encode_query(self, query: str) -> np.ndarray:
        return self.encode_texts([query])[0]
