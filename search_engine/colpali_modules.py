"""Import single modules of colpali-engine without running its package `__init__` files.

colpali-engine 0.3.18 (installed with --no-deps: requirements-nodeps.txt) cannot be imported as a
package here: `colpali_engine/__init__.py` imports every model and processor, and its Qwen2
processors import transformers' torchvision image processor (no CPU torchvision exists for our torch
pin). Its model files (`models/qwen2/colqwen2/modeling_colqwen2.py`, ...) and its token pooling
(`compression/token_pooling/*.py`) need only torch, transformers and scipy and work with our pinned
transformers 5.23 / torch 2.13. `import_module` registers the parent packages as empty namespace
shells (their `__init__` files are skipped) and then imports the one module asked for. The
processor is ours (search_engine/colqwen_processor.py) for the same reason.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from pathlib import Path

PACKAGE = "colpali_engine"


def package_folder() -> Path:
    """Where colpali-engine is installed; ImportError if it is not."""
    module = sys.modules.get(PACKAGE)
    if module is not None and getattr(module, "__path__", None):
        return Path(list(module.__path__)[0])
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("colpali-engine is not installed: pip install --no-deps -r requirements-nodeps.txt")
    return Path(list(spec.submodule_search_locations)[0])


def import_module(name: str) -> types.ModuleType:
    """Import `colpali_engine.<...>.<module>` with the `__init__` of each parent package skipped."""
    if not name.startswith(PACKAGE + "."):
        raise ValueError(f"{name!r} is not a colpali_engine module")
    root = package_folder()
    parts = name.split(".")
    for depth in range(1, len(parts)):
        package = ".".join(parts[:depth])
        if package not in sys.modules:
            shell = types.ModuleType(package)
            shell.__path__ = [str(root.joinpath(*parts[1:depth]))]
            sys.modules[package] = shell
    return importlib.import_module(name)
