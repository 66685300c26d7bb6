"""search_engine/mupdf.py: PyMuPDF is imported without its layout add-on, and still reads PDFs."""
from __future__ import annotations

import subprocess
import sys

from support.app_support import ROOT

PROBE = """
import sys, time
started = time.process_time()
from search_engine.pages import open_pdf
from search_engine.mupdf import pymupdf
cpu = time.process_time() - started
doc = pymupdf.open()
doc.new_page().insert_text((72, 72), "Kestrel Ridge opened in 1998")
words = [w[4] for w in doc[0].get_text("words")]
assert words == ["Kestrel", "Ridge", "opened", "in", "1998"], words
assert "pymupdf.layout" not in sys.modules
import pymupdf.layout  # asked for explicitly, the add-on still loads
print(round(cpu, 3))
"""


def test_search_engine_imports_pymupdf_without_the_layout_add_on():
    result = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
