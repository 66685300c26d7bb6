"""The reference VRAG demo client's image handling (Alibaba-NLP/VRAG demo/vrag_agent.py), written out
independently: the loop's JPEGs are checked byte for byte against it."""
from __future__ import annotations

import io
import math

from PIL import Image


def ref_process(image: Image.Image) -> tuple[Image.Image, bytes]:
    max_pixels, min_pixels = 512 * 28 * 28, 256 * 28 * 28
    if image.width * image.height > max_pixels:
        f = math.sqrt(max_pixels / (image.width * image.height))
        image = image.resize((int(image.width * f), int(image.height * f)))
    if image.width * image.height < min_pixels:
        f = math.sqrt(min_pixels / (image.width * image.height))
        image = image.resize((int(image.width * f), int(image.height * f)))
    if image.mode != "RGB":
        image = image.convert("RGB")
    buf = io.BytesIO()
    image.save(buf, format="JPEG")
    return image, buf.getvalue()


def ref_crop(raw: Image.Image, shown: Image.Image, bbox: list[float]) -> Image.Image:
    rw, rh = raw.size
    iw, ih = shown.size
    box = [bbox[0] * rw / iw, bbox[1] * rh / ih, bbox[2] * rw / iw, bbox[3] * rh / ih]
    box = [max(box[0] - 56, 0), max(box[1] - 56, 0), min(box[2] + 56, rw), min(box[3] + 56, rh)]
    return raw.crop(box)
