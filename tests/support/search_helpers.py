"""Real files for the search-engine tests, made on the spot with PyMuPDF and PIL."""
from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pymupdf
from PIL import Image, ImageDraw, ImageFont


def make_pdf(path: Path, pages: list[str], fontsize: float = 14, rotation: int = 0, fontname: str = "helv",
             **save_options) -> Path:
    """A born-digital PDF: one page per string, the text written at (72, 100) pt on US Letter
    (fontname "china-s" is MuPDF's built-in Chinese font)."""
    doc = pymupdf.open()
    for text in pages:
        page = doc.new_page(width=612, height=792)
        page.insert_text((72, 100), text, fontsize=fontsize, fontname=fontname)
        if rotation:
            page.set_rotation(rotation)
    doc.save(path, **save_options)
    doc.close()
    return path


def make_text_image(path: Path, lines: list[str], size=(900, 400)) -> Path:
    """An image-only page with large dark text, readable by OCR."""
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=40)
    for i, line in enumerate(lines):
        draw.text((40, 40 + 70 * i), line, fill="black", font=font)
    image.save(path)
    return path


def make_png_header_bomb(path: Path, width: int, height: int) -> Path:
    """A tiny PNG file that claims to be width x height pixels (a decompression bomb's header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit greyscale
    row = b"\x00" + b"\x00" * ((width + 7) // 8)
    idat = zlib.compress(row * 16, 9)  # only a few rows: the header is what matters
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


def ink_box(image: Image.Image, threshold: int = 128) -> tuple[int, int, int, int]:
    """Bounding box (x1, y1, x2, y2) of the dark pixels of an image."""
    mask = image.convert("L").point(lambda v: 255 if v < threshold else 0)
    return mask.getbbox()
