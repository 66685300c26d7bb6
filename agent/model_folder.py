"""Is this folder a usable Qwen2.5-VL model? Every problem found, in words for a person.

The transformers policy loads the same files a user gives vLLM (agent/qwen_model.py loads them and
stops at the first problem). Loading 16 GB to find out that a download stopped midway is no way to
check a folder, so this reads only what is cheap: the file list, config.json, the weight index and
the first bytes of each weight file. It says everything that is wrong at once (a folder can lack its
weights and its tokenizer), and speaks of folders and files, not of commands. No Streamlit here.
"""
from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

VRAG_MODEL = "autumncc/Qwen2.5-VL-7B-VRAG"  # the released VRAG-RL checkpoint (agent/qwen_model.py)
QWEN25_VL = "qwen2_5_vl"  # config.json's model_type for Qwen2.5-VL
WEIGHT_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
LFS_POINTER = b"version https://git-lfs"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
GET_IT = (f"Download the model (for example {VRAG_MODEL} from Hugging Face) on a machine with internet access, "
          "copy its folder to this server and give that folder's path here.")


@dataclass
class ModelFolderCheck:
    folder: str  # what was checked (a path, or a model id found in the Hugging Face cache)
    problems: list[str] = field(default_factory=list)  # each a sentence; empty when the folder looks usable
    facts: list[str] = field(default_factory=list)  # what was found (model type, size of the weights)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        if self.ok:
            return f"{self.folder} holds a Qwen2.5-VL model ({'; '.join(self.facts)}). Loading it takes a while the first time."
        return f"{self.folder} cannot be used: " + " ".join(self.problems)


def check_model_folder(folder: str) -> ModelFolderCheck:
    """Check `folder` (a local path, or a model id already in the Hugging Face cache) without loading it."""
    text = (folder or "").strip()
    check = ModelFolderCheck(text or "(no folder)")
    if not text:
        check.problems.append(f"No model folder is set. {GET_IT}")
        return check
    path = Path(text).expanduser()
    if not path.exists() and _HUB_ID.match(text) and not text.startswith((".", "~")):
        cached = _from_hub_cache(text)
        if cached is None:
            check.problems.append(f"There is no folder at {path}, and {text} is not a model already downloaded to this machine (downloads are off here). {GET_IT}")
            return check
        path = cached
        check.facts.append(f"found in the Hugging Face cache at {cached}")
    if not path.exists():
        check.problems.append(f"There is no folder at {path} on this server. {GET_IT}")
        return check
    if not path.is_dir():
        check.problems.append(f"{path} is a file; give the folder that holds config.json and the weight files.")
        return check
    try:
        names = {p.name for p in path.iterdir()}
    except OSError as e:
        check.problems.append(f"The folder cannot be read ({e.strerror or e}).")
        return check
    model_files = {"config.json", "generation_config.json", "preprocessor_config.json", "chat_template.json", "tokenizer.json",
                   "tokenizer_config.json", "vocab.json", "merges.txt", *WEIGHT_INDEXES}
    if not names & model_files and not any(n.endswith((".safetensors", ".bin")) for n in names):
        check.problems.append("It holds none of a model's files (config.json, weight files, tokenizer): give the folder the model was downloaded into, not a parent or a sub-folder.")
        return check
    _check_config(path, names, check)
    _check_weights(path, names, check)
    _check_processor(names, check)
    return check


def _from_hub_cache(model_id: str) -> Path | None:
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id=model_id, local_files_only=True))
    except Exception:  # not cached, no huggingface_hub, a malformed id: all mean "not here"
        return None


def _check_config(path: Path, names: set[str], check: ModelFolderCheck) -> None:
    if "config.json" not in names:
        check.problems.append("It has no config.json (the model's description); the download is incomplete.")
        return
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        check.problems.append(f"Its config.json cannot be read ({e.__class__.__name__}: {e}); the download may be damaged.")
        return
    if not isinstance(config, dict):
        check.problems.append("Its config.json does not describe a model.")
        return
    kind = config.get("model_type")
    if kind != QWEN25_VL:
        what = ", ".join(config.get("architectures") or []) or str(kind or "unknown")
        check.problems.append(f"Its config.json describes a {kind or 'model of no stated type'} model ({what}), not Qwen2.5-VL; the VRAG agent needs a Qwen2.5-VL model such as {VRAG_MODEL}.")
        return
    layers = (config.get("text_config") or {}).get("num_hidden_layers", config.get("num_hidden_layers"))
    check.facts.append(f"Qwen2.5-VL{f', {layers} layers' if layers else ''}")


def _check_weights(path: Path, names: set[str], check: ModelFolderCheck) -> None:
    listed: set[str] = set()
    for index_name in WEIGHT_INDEXES:
        if index_name in names:
            try:
                weight_map = json.loads((path / index_name).read_text(encoding="utf-8")).get("weight_map", {})
                listed |= {str(f) for f in weight_map.values()}
            except (OSError, UnicodeDecodeError, ValueError, AttributeError) as e:
                check.problems.append(f"Its {index_name} (the list of weight files) cannot be read ({e.__class__.__name__}).")
    weights = sorted(n for n in names if n.endswith(".safetensors") or (n.endswith(".bin") and n != "training_args.bin"))
    missing = sorted(listed - names)
    if missing:
        check.problems.append(f"{len(missing)} of the {len(listed)} weight files its index lists are missing (such as {missing[0]}): the download is incomplete.")
    if not weights:
        if not listed:
            check.problems.append("It holds no weight files (*.safetensors or *.bin): the weights were not downloaded.")
        return
    broken = []
    for name in weights:
        problem = _weight_file_problem(path / name)
        if problem:
            broken.append(f"{name} {problem}")
    if broken:
        check.problems.append("Some weight files are not usable: " + "; ".join(broken[:3]) + ("; …" if len(broken) > 3 else "") + ".")
    size = sum((path / name).stat().st_size for name in weights)
    amount = f"{size / 1e9:.1f} GB" if size >= 1e9 else f"{size / 1e6:.0f} MB"
    check.facts.append(f"{amount} of weights in {len(weights)} file{'s' if len(weights) != 1 else ''}")


def _weight_file_problem(file: Path) -> str | None:
    """Why a weight file is unusable, from its first bytes (None if it looks whole)."""
    try:
        size = file.stat().st_size
        with open(file, "rb") as f:
            head = f.read(max(8, len(LFS_POINTER)))
            if head.startswith(LFS_POINTER):
                return "is a Git LFS pointer (a small text file standing in for the weights), not the weights themselves"
            if file.suffix != ".safetensors":
                return None if size > 0 else "is empty"
            if len(head) < 8:
                return "is empty or cut short"
            (header_len,) = struct.unpack("<Q", head[:8])
            if header_len <= 0 or 8 + header_len > size:
                return "is cut short (the download may have stopped midway)"
            f.seek(8)
            header = json.loads(f.read(min(header_len, 100_000_000)))
    except (OSError, ValueError, struct.error) as e:
        return f"cannot be read ({e.__class__.__name__})"
    ends = [v.get("data_offsets", [0, 0])[1] for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)]
    if ends and 8 + header_len + max(ends) > size:
        return "is cut short (the download may have stopped midway)"
    return None


def _check_processor(names: set[str], check: ModelFolderCheck) -> None:
    if "preprocessor_config.json" not in names:
        check.problems.append("It has no preprocessor_config.json, the image processor's settings Qwen2.5-VL needs to read pages.")
    has_tokenizer = "tokenizer.json" in names or {"vocab.json", "merges.txt"} <= names
    if not has_tokenizer:
        check.problems.append("It has no tokenizer files (tokenizer.json, or vocab.json with merges.txt), which turn the model's text into words.")
