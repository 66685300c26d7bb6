"""Turn one source file into pages: a JPEG page image plus text boxes in page-pixel coordinates.

PDF pages are rendered with PyMuPDF at `dpi` (72 PDF points = 1 inch, so zoom = dpi / 72). Their
text layer gives word boxes, mapped through the page rotation and the zoom into the rendered image.
A page whose text layer has fewer than `min_text_chars` characters (a scan, a chart, a slide exported
as a picture) is OCR'd instead. Single images are OCR'd. Pages are stored as JPEG: a JPEG source is
kept byte for byte; everything else is encoded once at `jpeg_quality`.

Bad input raises SourceError with a reason a user can act on; the index turns it into a SkippedFile.
"""
from __future__ import annotations

import io
import logging
import math
import re
import warnings
from dataclasses import dataclass
from typing import Iterator

import numpy as np
from .mupdf import pymupdf
from PIL import Image, ImageOps, UnidentifiedImageError

from .ocr import OcrEngine
from .sources import SourceFile
from .types import TextBox

log = logging.getLogger(__name__)

# PIL's own decompression-bomb guard, set deliberately (its default is 89.5M). We check the pixel
# count against IndexConfig.max_image_pixels before decoding; this is the second line of defence.
MAX_IMAGE_PIXELS = 100_000_000
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS


class SourceError(Exception):
    """This source (or page) cannot be indexed; str(error) is the reason shown to the user."""


@dataclass
class RawPage:
    number: int  # 1-based
    jpeg: bytes  # the page image as stored
    width: int
    height: int
    words: list[TextBox]  # from the PDF text layer, page-pixel coordinates; [] for images
    image: Image.Image | None = None  # decoded RGB image when we already have it

    def rgb(self) -> Image.Image:
        if self.image is None:
            self.image = Image.open(io.BytesIO(self.jpeg)).convert("RGB")
        return self.image


def count_pages(source: SourceFile) -> int:
    if source.kind == "image":
        return 1
    with open_pdf(source) as doc:
        return doc.page_count


def read_pages(source: SourceFile, dpi: int, max_pixels: int, jpeg_quality: int,
               first: int = 1) -> Iterator[tuple[int, RawPage | SourceError]]:
    """(page number, page) of a source in order, from page `first` on (1-based). A page that fails
    inside a readable PDF is yielded as a SourceError."""
    if source.kind == "image":
        if first <= 1:
            yield 1, _read_image(source, max_pixels, jpeg_quality)
        return
    with open_pdf(source) as doc:
        for index in range(max(first, 1) - 1, doc.page_count):
            yield index + 1, read_pdf_page(doc, index, dpi, max_pixels, jpeg_quality)


def read_pdf_page(doc: pymupdf.Document, index: int, dpi: int, max_pixels: int, jpeg_quality: int) -> RawPage | SourceError:
    try:
        return _render_pdf_page(doc[index], dpi, max_pixels, jpeg_quality)
    except Exception as e:  # MuPDF raises plain RuntimeErrors for damaged page streams
        return SourceError(f"page {index + 1} could not be rendered: {e}")


def page_boxes(raw: RawPage, ocr: OcrEngine, min_text_chars: int) -> tuple[list[TextBox], str]:
    """The page's text boxes and where they came from ("pdf", "ocr" or "none")."""
    if sum(len(w.text) for w in raw.words) >= min_text_chars:
        return raw.words, "pdf"
    lines = ocr.read(raw.rgb())
    if sum(len(b.text) for b in lines) > sum(len(w.text) for w in raw.words):
        return lines, "ocr"
    return raw.words, ("pdf" if raw.words else "none")


# ---- PDFs ----------------------------------------------------------------------------------------
def open_pdf(source: SourceFile) -> pymupdf.Document:
    try:
        with open(source.path, "rb"):  # a permission problem is not a corrupt PDF
            pass
    except OSError as e:
        raise SourceError(f"cannot read the file: {e.strerror or e}") from None
    try:
        doc = pymupdf.open(source.path, filetype="pdf")
    except Exception as e:  # FileDataError, EmptyFileError, RuntimeError depending on the damage
        raise SourceError(f"not a readable PDF (corrupt or truncated): {e}") from None
    if doc.needs_pass:
        doc.close()
        raise SourceError(
            "password-protected PDF: it cannot be opened without its password; "
            "save a decrypted copy (e.g. `qpdf --decrypt --password=PASSWORD in.pdf out.pdf`) and index that"
        )
    if doc.page_count == 0:
        doc.close()
        raise SourceError("not a readable PDF (corrupt or truncated): no page could be found in it")
    return doc


def _render_pdf_page(page: pymupdf.Page, dpi: int, max_pixels: int, jpeg_quality: int) -> RawPage:
    zoom = dpi / 72
    width, height = page.rect.width * zoom, page.rect.height * zoom
    if width * height > max_pixels:  # a poster-sized page: render smaller rather than exhaust memory
        zoom *= math.sqrt(max_pixels / (width * height))
        log.warning("page %d is %.0fx%.0f pt; rendering at %.0f dpi instead of %d", page.number + 1,
                    page.rect.width, page.rect.height, zoom * 72, dpi)
    matrix = pymupdf.Matrix(zoom, zoom)
    pix = page.get_pixmap(matrix=matrix, alpha=False, colorspace=pymupdf.csRGB)
    words = _word_boxes(page, page.rotation_matrix * matrix, pix.width, pix.height)
    image = Image.frombytes("RGB", (pix.width, pix.height), pix.samples)
    return RawPage(page.number + 1, _jpeg(image, jpeg_quality), pix.width, pix.height, words, image)


def _word_boxes(page: pymupdf.Page, to_pixels: pymupdf.Matrix, width: int, height: int) -> list[TextBox]:
    """Text-layer words as boxes in the rendered image. get_text gives unrotated page points; the
    image shows the page rotated and zoomed, so both corners go through `to_pixels` (done with numpy:
    a PyMuPDF Rect per word cost more than rendering the page)."""
    words = [w for w in page.get_text("words") if w[4].strip()]
    if not words:
        return []
    a, b, c, d, e, f = to_pixels
    corners = np.array([w[:4] for w in words], dtype=np.float64)
    xs = np.stack([corners[:, 0] * a + corners[:, 1] * c, corners[:, 2] * a + corners[:, 3] * c], 1) + e
    ys = np.stack([corners[:, 0] * b + corners[:, 1] * d, corners[:, 2] * b + corners[:, 3] * d], 1) + f
    boxes = np.stack([xs.min(1), ys.min(1), xs.max(1), ys.max(1)], 1)
    boxes = np.clip(boxes, 0, [width, height, width, height]).round(2).tolist()
    return [TextBox(text=w[4], box=tuple(box), confidence=1.0) for w, box in zip(words, boxes)]


# ---- images --------------------------------------------------------------------------------------
def _read_image(source: SourceFile, max_pixels: int, jpeg_quality: int) -> RawPage:
    try:
        data = source.path.read_bytes()
    except OSError as e:
        raise SourceError(f"cannot read the file: {e.strerror or e}") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            pixels = image.width * image.height
            if pixels > max_pixels:
                raise SourceError(_bomb_reason(pixels, max_pixels, f"{image.width}x{image.height} = "))
            image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        # PIL refused the header before our own check ran; its message quotes its own limit, so
        # give the configured one (and the image's size, which PIL's message carries).
        found = re.search(r"\((\d+) pixels\)", str(e))
        pixels = int(found[1]) if found else None
        if pixels and pixels <= max_pixels:  # within our limit, but past the guard of pages.py's PIL setting
            raise SourceError(f"image too large: {pixels:,} pixels exceeds the image library's guard of "
                              f"{2 * Image.MAX_IMAGE_PIXELS:,} (search_engine/pages.py MAX_IMAGE_PIXELS)") from None
        raise SourceError(_bomb_reason(pixels, max_pixels)) from None
    except UnidentifiedImageError:
        raise SourceError("not a readable image (unknown format or corrupt data)") from None
    except (OSError, SyntaxError, ValueError) as e:  # truncated or damaged data
        raise SourceError(f"corrupt or truncated image: {e}") from None
    if getattr(image, "n_frames", 1) > 1:
        log.info("%s has %d frames; indexing the first", source.path, image.n_frames)
    upright = image.getexif().get(0x0112, 1) == 1  # EXIF Orientation: 1 = as stored
    if image.format == "JPEG" and upright and image.mode == "RGB":
        jpeg = data  # already a plain upright JPEG: store it untouched
        rgb = image
    else:
        rgb = _to_rgb(ImageOps.exif_transpose(image))
        jpeg = _jpeg(rgb, jpeg_quality)
    return RawPage(1, jpeg, rgb.width, rgb.height, [], rgb)


def _jpeg(image: Image.Image, quality: int) -> bytes:
    # PIL's libjpeg-turbo: ~10x faster here than MuPDF's own JPEG writer (23 ms vs 240 ms a page)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def _bomb_reason(pixels: int | None, limit: int, size: str = "") -> str:
    found = f"{size}{pixels:,} pixels exceeds" if pixels else "more pixels than"
    return (
        f"image too large: {found} the limit of {limit:,} "
        f"(decompression-bomb guard; raise IndexConfig.max_image_pixels if the image is genuine)"
    )


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, image).convert("RGB")
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit scans: scale to 8 bits
        return image.point(lambda v: v / 256).convert("L").convert("RGB")
    return image.convert("RGB")
