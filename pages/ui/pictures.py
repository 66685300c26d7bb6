"""Where a turn's pictures come from, decoded and encoded once per process (st.cache_data).

Images come from the index when this machine still has the page (full resolution), else from the
JPEGs the model saw, kept in the trajectory folder (or in memory while a run is going). Every cache
is keyed by what the picture depends on: a page file by its path and mtime, a JPEG the model saw by
its bytes, a thumbnail also by the outlines drawn on it. A rerun (a turn change, a layer switch)
therefore decodes nothing twice, and a live run's growing trajectory does not invalidate the turns
already drawn.

Heavy things load on first use only: the index and its embedder for a relevance map (when that
layer is switched on; for an index with a late-interaction embedder it is the visual similarity map,
search_engine/similarity_maps.py), attention maps when the trajectory has them.
"""
from __future__ import annotations

import io
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import streamlit as st
from PIL import Image, ImageDraw, ImageOps

from agent.figures import EncodedImage, encode_image
from agent.trajectory import ImageView, Trajectory, UnsafePathError, image_path, page_image_path
from pages import common

log = logging.getLogger(__name__)

FIGURE_MAX_SIDE = 1280  # pixels of the page embedded in the main figure (its drawn width, and some to zoom)
SHOWN_COLOUR = "#1f9d55"  # the search hit that was shown to the model


@dataclass
class TurnSource:
    """Where a trajectory's pictures come from: `folder` is its saved folder (None while only in
    memory); `index_folder` the index the run searched, if this machine has it."""

    trajectory: Trajectory
    folder: Path | None = None
    index_folder: Path | None = None

    def view_jpeg(self, view: ImageView) -> bytes | None:
        """The exact JPEG bytes the model saw for `view` (None if the record names a file it does not have,
        or one outside its folder: agent.trajectory.image_path refuses those)."""
        data = self.trajectory.images.get(view.file)
        if data is None and self.folder is not None:
            try:
                path = image_path(self.folder, view)
            except UnsafePathError as e:
                log.warning("not reading %r: %s", view.file, e)
                return None
            data = _file_bytes(str(path), _mtime(path))
        return data

    def page_file(self, page_id: str) -> str | None:
        """The full-resolution image of page `page_id` in the index the run searched, found by its id
        (agent.trajectory.page_image_path; never a path the record stored), or None when that index or
        that page is not on this machine."""
        if self.index_folder is None or not common.is_index_folder(Path(self.index_folder)):
            return None
        path = page_image_path(common.open_index(Path(self.index_folder)), page_id)
        return None if path is None else str(path)


def _mtime(path) -> float | None:
    try:
        return os.stat(path).st_mtime
    except (OSError, ValueError, TypeError):
        return None


@st.cache_data(max_entries=512, show_spinner=False)
def _file_bytes(path: str, mtime: float | None) -> bytes | None:
    if mtime is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError:
        return None


def _open_page(path: str, max_side: int) -> tuple[Image.Image, tuple[int, int]] | None:
    try:
        image = Image.open(path)
        size = image.size
        image.draft("RGB", (max_side, max_side))  # JPEG: decode at a reduced scale, much faster
        image = image.convert("RGB")
        image.thumbnail((max_side, max_side))
        return image, size
    except (OSError, ValueError) as e:  # unreadable or not an image: the caller falls back
        log.warning("cannot read page image %s: %s", path, e)
        return None


@st.cache_data(max_entries=512, show_spinner=False)
def _display_image(path: str, mtime: float, max_side: int) -> tuple[Image.Image, tuple[int, int]] | None:
    return _open_page(path, max_side)


def display_image(path: str, max_side: int = 900) -> tuple[Image.Image, tuple[int, int]] | None:
    """(downscaled image, full (w, h)) of a page image file on this machine, or None if it is not here."""
    mtime = _mtime(path)
    return None if mtime is None else _display_image(path, mtime, max_side)


@st.cache_data(max_entries=256, show_spinner=False)
def _encoded_page(path: str, mtime: float, max_side: int) -> tuple[EncodedImage, tuple[int, int]] | None:
    found = _open_page(path, max_side)
    return None if found is None else (encode_image(found[0], max_side), found[1])


@st.cache_data(max_entries=256, show_spinner=False)
def _encoded_jpeg(data: bytes, max_side: int) -> EncodedImage:
    return encode_image(Image.open(io.BytesIO(data)), max_side)


def picture(source: TurnSource, view: ImageView, whole_page: bool, max_side: int = FIGURE_MAX_SIDE) -> tuple[EncodedImage, list[float], str] | None:
    """(encoded image, the page region it covers, where it came from) for drawing `view`.

    whole_page: the view's full page from the index when it is on this machine, else the view's
    own JPEG over its region. Not whole_page: exactly the JPEG the model saw, over its region.
    """
    if whole_page:
        page_file = source.page_file(view.page_id)
        mtime = _mtime(page_file) if page_file else None
        found = _encoded_page(page_file, mtime, max_side) if mtime is not None else None
        if found is not None:
            encoded, (w, h) = found
            return encoded, [0.0, 0.0, float(w), float(h)], "the page in the index"
    jpeg = source.view_jpeg(view)
    if jpeg is None:
        return None
    return _encoded_jpeg(jpeg, max_side), list(view.region), "the image sent to the model"


# --- thumbnails ---------------------------------------------------------------------------------


def _outlined(image: Image.Image, scale: float, origin: tuple[float, float], outlines, line: int) -> Image.Image:
    draw = ImageDraw.Draw(image)
    for box, colour in outlines:
        x0, y0, x1, y1 = ((box[0] - origin[0]) * scale, (box[1] - origin[1]) * scale, (box[2] - origin[0]) * scale, (box[3] - origin[1]) * scale)
        draw.rectangle([x0, y0, x1, y1], outline=colour, width=line)
    return image


def _framed(image: Image.Image, width: int, height: int | None) -> Image.Image:
    """`image` centred on a white `width` x `height` canvas (so a strip of thumbnails lines up)."""
    if height is None:
        return image
    canvas = Image.new("RGB", (width, height), "white")
    canvas.paste(image.convert("RGB"), ((width - image.width) // 2, (height - image.height) // 2))
    return canvas


def _jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


@st.cache_data(max_entries=2048, show_spinner=False)
def _page_thumbnail(path: str, mtime: float, width: int, height: int | None, outlines: tuple, marked: bool) -> bytes | None:
    found = _open_page(path, width * 2)
    if found is None:
        return None
    image, (full_w, _) = found
    image = ImageOps.contain(image, (width, height or width * 4))
    image = _outlined(image, image.width / full_w, (0.0, 0.0), outlines, max(2, width // 60))
    image = _framed(image, width, height)
    if marked:
        image = ImageOps.expand(image, border=max(3, width // 40), fill=SHOWN_COLOUR)
    return _jpeg(image)


@st.cache_data(max_entries=2048, show_spinner=False)
def _jpeg_thumbnail(data: bytes, region: tuple, width: int, height: int | None, outlines: tuple) -> bytes:
    image = Image.open(io.BytesIO(data))
    image = ImageOps.contain(image.convert("RGB"), (width, height or width * 4))
    scale = image.width / (region[2] - region[0])
    return _jpeg(_framed(_outlined(image, scale, (region[0], region[1]), outlines, max(2, width // 60)), width, height))


@st.cache_data(max_entries=8, show_spinner=False)
def blank(width: int, height: int) -> bytes:
    return _jpeg(Image.new("RGB", (width, height), "#f0f2f6"))


def page_thumbnail(path: str, width: int, outlines: tuple = (), marked: bool = False, height: int | None = None) -> bytes | None:
    """A JPEG thumbnail `width` px wide of a page file, outlines ((box, colour), ...) in page pixels drawn
    on it; with `height`, framed in exactly width x height."""
    mtime = _mtime(path)
    return None if mtime is None else _page_thumbnail(path, mtime, width, height, tuple(outlines), marked)


def view_thumbnail(source: TurnSource, view: ImageView, width: int, outlines: tuple = (), whole_page: bool = True,
                   height: int | None = None) -> bytes | None:
    """A thumbnail of what a turn drew: the view's whole page (from the index, else its JPEG) or its region."""
    page_file = source.page_file(view.page_id) if whole_page else None
    if page_file:
        found = page_thumbnail(page_file, width, outlines, height=height)
        if found is not None:
            return found
    jpeg = source.view_jpeg(view)
    if jpeg is None:
        return None
    return _jpeg_thumbnail(jpeg, tuple(view.region), width, height, tuple(outlines))


# --- maps (heavy: the index and its embedder load on first use) ----------------------------------


@st.cache_data(max_entries=512, show_spinner=False)
def _relevance(index_folder: str, page_id: str, query: str):
    from search_engine.relevance import relevance_map

    index = common.open_index(Path(index_folder))
    page = index.page(page_id)
    result = relevance_map(query, page, common.box_cache(index_folder))
    return result.values, result.extent, result.peak


def relevance(index_folder: Path | None, page_id: str, query: str):
    """(values, extent, peak) of the retrieval relevance map of `query` over a page, or None when the
    index the run searched is not on this machine or lacks that page."""
    if index_folder is None or not common.is_index_folder(Path(index_folder)):
        return None
    try:
        return _relevance(str(index_folder), page_id, query)
    except KeyError:
        return None


def visual_index(index_folder: Path | None) -> bool:
    """Whether the index searches page images with a late-interaction embedder (read from its
    config.json; loads nothing): its relevance layer is then the visual similarity map."""
    if index_folder is None or not common.is_index_folder(Path(index_folder)):
        return False
    from search_engine.embedders import is_multivector
    from search_engine.store import IndexStore

    return is_multivector(str((IndexStore(Path(index_folder)).read_config() or {}).get("embedder", "")))


@st.cache_data(max_entries=128, show_spinner=False)
def _similarities(index_folder: str, page_id: str, query: str):
    from search_engine.similarity_maps import page_similarities

    index = common.open_index(Path(index_folder))  # the index and its embedder: st.cache_resource
    image = index.page_image(page_id)
    return page_similarities(index.embedder, image, query), image.size


def similarities(index_folder: Path | None, page_id: str, query: str):
    """(PageSimilarities, page size) of `query` over a page of a visual index, or None when the index
    is not on this machine or lacks that page."""
    if not visual_index(index_folder):
        return None
    try:
        return _similarities(str(index_folder), page_id, query)
    except KeyError:
        return None


def attention_maps(source: TurnSource, turn_index: int) -> list:
    """The stored model-attention maps of one turn (agent/attention.py), [] when none were computed."""
    turn = source.trajectory.turns[turn_index]
    if source.folder is None or not any(k.startswith("attention:") for k in turn.maps):
        return []
    from agent.attention import load_attention_maps

    try:
        return load_attention_maps(source.folder, source.trajectory, turn_index)
    except (OSError, ValueError) as e:
        log.warning("cannot read the attention maps of turn %d in %s: %s", turn_index, source.folder, e)
        return []
