"""Finding and loading a Qwen2.5-VL model folder, never from the network.

The transformers policy and the attention re-forward load the same files a user gives vLLM (for
example `autumncc/Qwen2.5-VL-7B-VRAG`). Here there is no internet and no weights, so a name that
is neither a local folder nor already in the Hugging Face cache fails at once with a message that
says how to get it; nothing ever waits on a download.
"""
from __future__ import annotations

import json
import logging
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

from agent.policies.base import PolicyError

log = logging.getLogger(__name__)

VRAG_MODEL = "autumncc/Qwen2.5-VL-7B-VRAG"  # the released VRAG-RL checkpoint (also Qiuchen-Wang/...)
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class ModelFolderError(PolicyError):
    """The model folder is missing, incomplete, or not a Qwen2.5-VL model. The message says what to do."""


def how_to_get(model: str) -> str:
    repo = model if _HUB_ID.match(model) else VRAG_MODEL
    local = repo.split("/")[-1]
    return (
        f"Download it on a machine with internet, e.g. `huggingface-cli download {repo} --local-dir {local}` "
        f"(the 7B VRAG model is about 16 GB), copy the folder here and pass its path "
        f"(the same folder you would give `vllm serve`)."
    )


def resolve_model_dir(model: str | os.PathLike) -> Path:
    """A local folder holding `model`: the path itself, or a hub id already in the HF cache.

    Raises ModelFolderError naming the model and how to get it; never downloads.
    """
    name = str(model)
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelFolderError(f"{path} has no config.json, so it is not a model folder. {how_to_get(name)}")
        return path
    if _HUB_ID.match(name) and not name.startswith((".", "~")):
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError

        try:
            return Path(snapshot_download(repo_id=name, local_files_only=True))
        except (LocalEntryNotFoundError, FileNotFoundError, OSError, ValueError) as e:
            log.debug("%s is not in the Hugging Face cache: %s", name, e)
            raise ModelFolderError(
                f"model {name} is not on this machine: it is neither a local folder nor in the Hugging Face "
                f"cache, and downloads are off here (offline). {how_to_get(name)}"
            ) from None
    raise ModelFolderError(f"model folder {path} does not exist. {how_to_get(name)}")


def check_qwen25_vl(model_dir: Path) -> dict:
    """The folder's config.json, after checking it describes a Qwen2.5-VL model."""
    try:
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ModelFolderError(f"{model_dir}/config.json cannot be read: {e}") from e
    if config.get("model_type") != "qwen2_5_vl":
        raise ModelFolderError(
            f"{model_dir} holds a {config.get('model_type')!r} model; this needs Qwen2.5-VL (model_type 'qwen2_5_vl'), "
            f"such as {VRAG_MODEL}. {how_to_get(VRAG_MODEL)}"
        )
    return config


@dataclass
class LoadedQwenVL:
    """A model and its processor, loaded once and shared (policy, attention, benchmarks).

    Hold `lock` around any call into the model: the attention capture hooks the model's layers for
    the length of one forward pass, which must not overlap a generation from another thread.
    """

    model: object  # Qwen2_5_VLForConditionalGeneration, in eval mode
    processor: object  # agent.qwen_processor.ImageOnlyQwenVLProcessor
    name: str  # what the user asked for: a folder or a hub id
    model_dir: Path
    device: str
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def num_layers(self) -> int:
        return self.model.config.text_config.num_hidden_layers


def pick_device(device: str) -> str:
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelFolderError(f"device {device!r} was asked for but torch sees no CUDA GPU here; use device='cpu'")
    if device == "mps" and not torch.backends.mps.is_available():
        raise ModelFolderError("device 'mps' was asked for but is not available; use device='cpu'")
    return device


def load_qwen_vl(model: str | os.PathLike, device: str = "cpu", dtype: str = "auto", attn_implementation: str = "sdpa") -> LoadedQwenVL:
    """Load Qwen2.5-VL and its processor from a local folder (or the HF cache), offline.

    dtype "auto" keeps the checkpoint's dtype (bfloat16 for the released models); attn_implementation
    is passed to transformers ("sdpa", "eager", ...).
    """
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    from agent.qwen_processor import load_processor

    model_dir = resolve_model_dir(model)
    check_qwen25_vl(model_dir)
    device = pick_device(device)
    torch_dtype = dtype if dtype == "auto" else getattr(torch, dtype)
    try:
        processor = load_processor(model_dir)
        net = Qwen2_5_VLForConditionalGeneration.from_pretrained(
            model_dir, dtype=torch_dtype, attn_implementation=attn_implementation, local_files_only=True
        )
    except (OSError, ValueError) as e:
        raise ModelFolderError(f"cannot load Qwen2.5-VL from {model_dir}: {e}. {how_to_get(str(model))}") from e
    net = net.to(device).eval()
    log.info("loaded %s from %s on %s (%s, %s attention)", model, model_dir, device, net.dtype, attn_implementation)
    return LoadedQwenVL(model=net, processor=processor, name=str(model), model_dir=model_dir, device=device)
