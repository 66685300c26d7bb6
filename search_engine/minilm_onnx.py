"""all-MiniLM-L6-v2 on ONNX Runtime: the same vectors as sentence-transformers, at a third of the CPU.

Why: on this machine one query embedding cost ~20 ms of CPU on torch against ~7 ms on ONNX Runtime
(bench/RESULTS.md, issue 11 session 2), and a fused search's budget is 20 ms. A process that only
searches also need not load torch's model (its RSS was 815 MB on torch, 554 MB on ONNX Runtime).

The model is the sentence-transformers pipeline as one graph: BERT, mean pooling over the attention
mask, L2 normalisation (the model folder's modules.json and 1_Pooling say so; anything else is
refused). It is exported from the installed weights with torch.onnx on first use (once per machine;
70 s with the check below on this busy 2-core machine; needs torch and the `onnx` package) and
cached as a file keyed by the weights file and the versions that made it, so later processes, and
ingest workers, load only onnxruntime and the tokenizer.

The graph is used only if it gives sentence-transformers' vectors: right after the export, both
embed CHECK_TEXTS (empty, short, past 128 tokens, Chinese, accents, digits; one padded batch) and
every pair must have cosine >= MIN_COSINE. The measured minimum is kept beside the graph, so later
processes trust it without loading torch; a graph that failed the check, or cannot be loaded, is
reported as OnnxUnavailable and the caller runs sentence-transformers instead (embedders.py logs why).

    <cache>/minilm-<key>.onnx        the graph
    <cache>/minilm-<key>.check.json  {"min_cosine": ..., "texts": n}: the check it passed or failed
    cache: $VRAG_CACHE_DIR, else $XDG_CACHE_HOME/vrag-studio, else ~/.cache/vrag-studio

Threads: one intra-op thread by default, as the CLI, the server and the app search on one thread
(on a busy 2-core machine more threads were slower; search_engine/dense.py).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

INPUTS = ("input_ids", "attention_mask", "token_type_ids")
MIN_COSINE = 0.9999  # every check text's ONNX vector against torch's
CHECK_TEXTS = (
    "", "   padded with spaces   ", "What was the revenue in 2023?", "revenue",
    "Quarterly report: net income rose 12.5% to EUR 4.7 million (Q3 2024), driven by exports.",
    "云栖大会 阿里云 数据中心", "Ünïcödé café naïve résumé, Straße", "e=mc^2; x_1 + x_2 <= 10 ### $$$ ---",
    " ".join(f"section {i} water energy transport safety housing parks schools" for i in range(40)),
    "THE TREATMENT PLANT OPENED IN MAY 1998 AFTER A TWO-YEAR DELAY",
)


class OnnxUnavailable(RuntimeError):
    """This model cannot run on ONNX Runtime here (a package missing, an unexpected pipeline, a
    failed export); the caller falls back to sentence-transformers."""


def cache_dir() -> Path:
    if os.environ.get("VRAG_CACHE_DIR"):
        return Path(os.environ["VRAG_CACHE_DIR"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "vrag-studio"


def _check_pipeline(model_dir: Path) -> None:
    """The folder must be Transformer -> mean Pooling -> Normalize, as all-MiniLM-L6-v2 is."""
    try:
        modules = [m["type"].rsplit(".", 1)[-1] for m in json.loads((model_dir / "modules.json").read_text())]
        pooling = json.loads((model_dir / "1_Pooling" / "config.json").read_text())
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise OnnxUnavailable(f"cannot read the sentence-transformers pipeline in {model_dir}: {e}") from e
    means = pooling.get("pooling_mode_mean_tokens") and not any(
        v for k, v in pooling.items() if k.startswith("pooling_mode_") and k != "pooling_mode_mean_tokens")
    if modules != ["Transformer", "Pooling", "Normalize"] or not means:
        raise OnnxUnavailable(f"{model_dir} is {modules} with pooling {pooling}, not Transformer + mean Pooling + Normalize")


def model_key(model_dir: Path) -> str:
    """What the exported graph depends on: the weights file (path, size, mtime) and the exporter."""
    from importlib.metadata import PackageNotFoundError, version

    weights = model_dir / "model.safetensors"
    if not weights.exists():
        raise OnnxUnavailable(f"no model.safetensors in {model_dir}")
    stat = weights.stat()
    versions = []
    for package in ("torch", "onnx", "onnxruntime"):  # read from the metadata: importing torch costs seconds
        try:
            versions.append(version(package))
        except PackageNotFoundError:
            versions.append("none")
    text = "|".join([str(weights.resolve()), str(stat.st_size), str(stat.st_mtime_ns), *versions])
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def export(model_dir: Path, out: Path) -> None:
    """Write the pipeline (BERT + mean pooling + normalisation) as an ONNX graph to `out`, atomically."""
    try:
        import onnx  # noqa: F401  (torch.onnx's exporter needs it)
        import torch
        from transformers import AutoModel, AutoTokenizer
    except ImportError as e:
        raise OnnxUnavailable(f"exporting MiniLM to ONNX needs torch, transformers and onnx ({e})") from e

    class Pipeline(torch.nn.Module):
        def __init__(self, bert):
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask, token_type_ids):
            tokens = self.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(tokens.dtype)
            mean = (tokens * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(mean, p=2, dim=1)

    bert = AutoModel.from_pretrained(str(model_dir)).eval()
    sample = AutoTokenizer.from_pretrained(str(model_dir))(["an example question", "two"], padding=True, return_tensors="pt")
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)  # a cache folder we cannot write: use torch
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the tracer's notes on Python control flow it froze (shapes stay dynamic)
            torch.onnx.export(Pipeline(bert), tuple(sample[k] for k in INPUTS), str(tmp), input_names=list(INPUTS),
                              output_names=["embedding"], opset_version=17, dynamo=False,
                              dynamic_axes={**{k: {0: "batch", 1: "tokens"} for k in INPUTS}, "embedding": {0: "batch"}})
        os.replace(tmp, out)
    except Exception as e:  # torch.onnx raises many kinds; any of them means: use torch instead
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise OnnxUnavailable(f"exporting {model_dir} to ONNX failed: {e}") from e


def _check_file(onnx_file: Path) -> Path:
    return onnx_file.with_name(onnx_file.name.removesuffix(".onnx") + ".check.json")


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _measure_agreement(model: "OnnxMiniLM", model_dir: Path, max_tokens: int) -> float:
    """Embed CHECK_TEXTS with the graph and with sentence-transformers (torch); the lowest cosine."""
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as e:
        raise OnnxUnavailable(f"checking the ONNX graph against sentence-transformers needs it ({e})") from e
    reference = SentenceTransformer(str(model_dir), device="cpu")
    reference.max_seq_length = max_tokens
    texts = list(CHECK_TEXTS)
    expected = reference.encode(texts, batch_size=len(texts), normalize_embeddings=True, convert_to_numpy=True,
                                show_progress_bar=False)
    got = model.encode(texts, batch_size=len(texts))
    cosines = (got * expected).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(expected, axis=1))
    lowest = float(cosines.min())
    log.info("MiniLM on ONNX Runtime against sentence-transformers: lowest cosine %.8f on %d texts", lowest, len(texts))
    return lowest


@dataclass(frozen=True)
class OnnxSpec:
    """Everything a process needs to run the model (picklable: ingest workers rebuild it from this)."""

    onnx_file: str
    tokenizer_file: str
    max_tokens: int
    threads: int = 1


class OnnxMiniLM:
    """Texts in, unit vectors out (float32, (n, 384))."""

    def __init__(self, spec: OnnxSpec):
        import onnxruntime
        from tokenizers import Tokenizer

        self.spec = spec
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = spec.threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._session = onnxruntime.InferenceSession(spec.onnx_file, options, providers=["CPUExecutionProvider"])
        self._tokenizer = Tokenizer.from_file(spec.tokenizer_file)
        self._tokenizer.enable_truncation(spec.max_tokens)
        self._tokenizer.enable_padding()
        self.dim = int(self._session.get_outputs()[0].shape[1] or 384)

    @classmethod
    def for_model(cls, model_dir, max_tokens: int, threads: int = 1) -> "OnnxMiniLM":
        """Load the cached graph of this model folder, exporting it first if there is none."""
        try:
            import onnxruntime  # noqa: F401
            import tokenizers  # noqa: F401
        except ImportError as e:
            raise OnnxUnavailable(f"onnxruntime or tokenizers is missing ({e})") from e
        model_dir = Path(model_dir)
        _check_pipeline(model_dir)
        out = cache_dir() / f"minilm-{model_key(model_dir)}.onnx"
        spec = OnnxSpec(str(out), str(model_dir / "tokenizer.json"), max_tokens, threads)
        if out.exists():
            try:
                model = cls(spec)
            except Exception as e:  # a damaged cache file (onnxruntime raises its own kinds): make it again
                log.warning("cannot load the cached MiniLM graph %s (%s): exporting it again", out, e)
                out.unlink(missing_ok=True)
        if not out.exists():
            log.info("exporting %s to ONNX (once) at %s", model_dir, out)
            export(model_dir, out)
            _check_file(out).unlink(missing_ok=True)
            try:
                model = cls(spec)
            except Exception as e:
                raise OnnxUnavailable(f"onnxruntime cannot load the exported graph {out}: {e}") from e
        model.check(model_dir)
        return model

    def check(self, model_dir) -> float:
        """The lowest cosine between this graph's vectors and sentence-transformers' on CHECK_TEXTS
        (measured once per graph, then read from its check file). Raises OnnxUnavailable below MIN_COSINE."""
        check_file = _check_file(Path(self.spec.onnx_file))
        try:
            found = json.loads(check_file.read_text())
            lowest, texts = float(found["min_cosine"]), int(found["texts"])
        except (OSError, ValueError, KeyError, TypeError):
            lowest, texts = _measure_agreement(self, Path(model_dir), self.spec.max_tokens), len(CHECK_TEXTS)
            try:
                _write_atomically(check_file, json.dumps({"min_cosine": lowest, "texts": texts}).encode())
            except OSError as e:  # measured again by the next process
                log.warning("cannot keep the ONNX check result at %s: %s", check_file, e)
        if not lowest >= MIN_COSINE:  # also refuses NaN
            raise OnnxUnavailable(f"its vectors differ from sentence-transformers' (lowest cosine {lowest:.6f} on "
                                  f"{texts} check texts, {MIN_COSINE} needed; {check_file})")
        return lowest

    def encode(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        out = []
        for start in range(0, len(texts), batch_size):
            encodings = self._tokenizer.encode_batch([t.strip() for t in texts[start : start + batch_size]])
            feed = {"input_ids": np.array([e.ids for e in encodings], np.int64),
                    "attention_mask": np.array([e.attention_mask for e in encodings], np.int64),
                    "token_type_ids": np.array([e.type_ids for e in encodings], np.int64)}
            out.append(self._session.run(None, feed)[0])
        return np.ascontiguousarray(np.vstack(out), dtype=np.float32)
