"""Decode a page image only as far down as a crop needs it.

A crop turn cuts its region from the full-resolution page (the protocol crops the raw page, not
the view the model saw). Decoding a 5334x3000 JPEG costs 25-90 ms of CPU (more into fresh memory),
a crop turn's biggest part, and a baseline JPEG is decoded top to bottom: the rows below the crop
are work nobody looks at.
`decode_top(source, rows)` stops libjpeg after `rows` rows. The rows it gives are the rows a full
decode gives, bit for bit: libjpeg emits scanlines in order and reads the chroma rows it needs for
smoothing (fancy upsampling) ahead of the row it emits, whether or not the caller asks for more.
`tests/integration/test_page_decode.py` checks that on every page of the demo corpus.

Anything else (PNG, progressive JPEG, rows past the page's end) is decoded whole, so the caller
never has to know which happened: it gets a `PageTop`, the top rows of the page and the page's
full size, with `complete` saying whether that is the whole page.

Pillow has no public call for a partial decode, so this drives its JPEG decoder as
`ImageFile.load` does (`Image._getdecoder`, `setimage` over fewer rows, `decode` in blocks): only
the decoder's target rectangle differs. When the rows are done libjpeg refuses to "finish" a
decompression whose rows were not all read, and the decoder reports that as a broken stream; that
report, after the last block it asked for, is how a partial decode ends. A file that runs out first
raises like a truncated file does. A stream that is corrupt above the rows asked for cannot be told
from that normal end (libjpeg itself mostly warns and goes on there); the pages of an index were
decoded whole once, when their model views were made at ingest.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageFile

_BLOCK = 1 << 16  # bytes fed to the decoder at a time, as Pillow's own loader does
_BROKEN = -2  # Pillow's IMAGING_CODEC_BROKEN: the end of a partial decode (see the module docstring)


@dataclass(frozen=True)
class PageTop:
    image: Image.Image  # rows [0, image.height) of the page, exactly as a full decode gives them
    size: tuple[int, int]  # the whole page's (width, height), from its header

    @property
    def complete(self) -> bool:
        return self.image.height >= self.size[1]


def decode_top(source: str | Path | bytes, rows: int | None = None) -> PageTop:
    """The page in `source` (a path or the file's bytes), decoded down to row `rows` (None: all).

    Raises OSError (PIL.UnidentifiedImageError included) for a file that is not a readable image."""
    image = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
    size = (image.width, image.height)
    if rows is None or rows >= image.height or not _streams_rows(image):
        image.load()
        return PageTop(image, size)
    return PageTop(_decode_jpeg_rows(image, max(1, int(rows))), size)


def _streams_rows(image: Image.Image) -> bool:
    """A baseline JPEG in one tile: its rows come out in order as the data is read."""
    return (image.format == "JPEG" and not image.info.get("progressive") and not image.info.get("progression")
            and len(image.tile) == 1 and image.tile[0][0] == "jpeg")


def _decode_jpeg_rows(image: ImageFile.ImageFile, rows: int) -> Image.Image:
    decoder_name, _extent, offset, args = image.tile[0]
    out = Image.new(image.mode, (image.width, rows), None)  # not initialised: every row is decoded into
    decoder = Image._getdecoder(image.mode, decoder_name, args, image.decoderconfig)
    try:
        decoder.setimage(out.im, (0, 0, image.width, rows))
        image.fp.seek(offset)
        buffered = b""
        while True:
            block = image.fp.read(_BLOCK)
            buffered += block
            consumed, status = decoder.decode(buffered)
            if consumed < 0:  # the decoder is done: all rows written (or the stream is broken)
                if status not in (0, _BROKEN):
                    raise OSError(f"decoder error {status} while decoding the page")
                break
            if not block:
                raise OSError("image file is truncated: it ended before the rows a crop needs")
            buffered = buffered[consumed:]
    finally:
        decoder.cleanup()
        image.close()
    return out
