"""PyMuPDF, imported without its layout-analysis add-on.

`import pymupdf` (2.0) also imports `pymupdf.layout` when the `pymupdf-layout` package is installed,
and the `pymupdf` package requires it: building that add-on's ONNX layout models costs ~0.8 s of CPU
in every process that imports pymupdf (an ingest worker, the CLI, the app's first search). It serves
`Page.get_layout()` only, which this project never calls: rendering, the text layer and word boxes
do not use it. So the first import of pymupdf goes through here, with `pymupdf.layout` marked as
absent; pymupdf then skips it, as it does when the add-on is not installed. A process that imported
pymupdf before (with the add-on) keeps it: this changes nothing there.
"""
from __future__ import annotations

import sys

if "pymupdf" not in sys.modules:
    sys.modules.setdefault("pymupdf.layout", None)  # `import pymupdf.layout` now raises ImportError
    try:
        import pymupdf
    finally:
        if sys.modules.get("pymupdf.layout", ...) is None:
            del sys.modules["pymupdf.layout"]  # a later explicit import of the add-on still works
else:
    import pymupdf

__all__ = ["pymupdf"]
