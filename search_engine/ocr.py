"""OCR for page images without a text layer: rapidocr (PP-OCR ONNX models, Chinese + English).

rapidocr returns one quadrilateral per detected text line. We keep line boxes, not its word boxes:
on slides its "words" split inside words ("P", "OW", "ER" for "POWER"), which is worse than a line
box for highlighting and useless for retrieval. Building the engine loads three ONNX models
(about a second), so construct one `OcrEngine` and pass it around.
"""
from __future__ import annotations

import logging

import numpy as np
from PIL import Image

from .types import TextBox

log = logging.getLogger(__name__)


class OcrEngine:
    """Reads text lines from an image. Boxes are (x1, y1, x2, y2) in that image's pixel coordinates."""

    def __init__(self, min_confidence: float = 0.5, max_side: int = 2000, upside_down: bool = False,
                 threads: int | None = 1):
        from rapidocr import RapidOCR  # heavy import: onnxruntime + opencv

        # rapidocr downsizes images whose longer side exceeds max_side before detection and maps the
        # boxes back to the input size; 2000 keeps 16:9 slides at 5334 px readable at ~1.5 s a page.
        # The 180-degree line classifier costs ~10% and only helps with upside-down scans: off by default.
        self._engine = RapidOCR(
            params={
                "Global.log_level": "warning",
                "Global.text_score": min_confidence,
                "Global.max_side_len": max_side,
                "Global.use_cls": upside_down,
                # onnxruntime's default thread pool spins on every core. On this shared 2-core machine
                # one thread was faster in wall time too: 4.5 vs 8.2 s a page at load 5, 7.1 vs 12.3 s
                # at load 11 (CPU 3.0 vs 4.8 s). None = onnxruntime's default (all cores).
                "EngineConfig.onnxruntime.intra_op_num_threads": threads or -1,
                "EngineConfig.onnxruntime.inter_op_num_threads": 1 if threads else -1,
            }
        )

    def read(self, image: Image.Image) -> list[TextBox]:
        """Text lines in reading order as rapidocr returns them (top to bottom), with confidence."""
        array = np.asarray(image.convert("RGB"))
        result = self._engine(array)
        if result.boxes is None or result.txts is None:
            return []
        lines = []
        for quad, text, score in zip(result.boxes, result.txts, result.scores):
            text = text.strip()
            if not text:
                continue
            xs, ys = quad[:, 0], quad[:, 1]
            box = (float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max()))
            lines.append(TextBox(text=text, box=box, confidence=round(float(score), 4)))
        return lines
