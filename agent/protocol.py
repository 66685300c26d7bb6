"""The VRAG protocol's rules as data and pure functions: the profiles, what size the model sees,
how a <bbox> becomes a crop. Numbers in and numbers out, so each rule can be checked by hand
(../shared/notes/vrag-protocol.md, "One turn", "Image sizing", "The training loop differs from the
demo client"):
- images are scaled by sqrt(pixel budget / pixels) with truncation to int, plain PIL resize,
  RGB, JPEG, sent as `data:image;base64,...`;
- demo crop (the authors' demo client): a bbox is in the pixels of the LAST image sent; it is mapped
  to that image's raw version by x*raw_w/input_w, padded by 56 raw pixels per side, clamped, and
  cropped from the raw image. The raw version of a crop is that crop of the full-resolution page, so
  every region is kept in page pixels (`ImageView.region`) and a crop of a crop is a crop of the page.
- training crop (the training loop in validation mode, which produced the paper's numbers): the bbox
  is padded by 28 pixels per side in the coordinates of the last image in context, then scaled by
  int(raw * v / input) to the raw size of the last RETRIEVED PAGE (even when the last image was a
  crop), clamped, and cropped from that page. A box that leaves nothing to crop fails.

A profile names one choice per rule; the loop, the parser and the conversation read it.
"""
from __future__ import annotations

import base64
from dataclasses import asdict, dataclass

from PIL import Image

from agent.trajectory import Box, ImageView, Trajectory
# What the model sees of an image (the pixel bounds, `input_size`, `prepare_image`) is defined once,
# beside the per-page cache of its results: search_engine/model_views.py (ingest needs the rule, and
# imports run agent -> search_engine). These are the protocol's names for it.
from search_engine.model_views import MAX_PIXELS, MIN_PIXELS, input_size, prepare_image  # noqa: F401

CROP_PADDING = 56  # raw pixels added on each side of a bbox before cropping (demo client)
TRAINING_CROP_PADDING = 28  # pixels of the last image in context added on each side (training loop, validation)
MAX_ASPECT_RATIO = 200  # Qwen2.5-VL's image processor refuses a longer side over 200x the shorter
IMAGE_URL_PREFIX = "data:image;base64,"


# --- profiles --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProtocolProfile:
    """One choice per rule of the interaction format.

    replies:  which replies are invalid: "strict" (our checks, agent/parsing.parse_reply) or
              "training" (the training loop's, agent/parsing.parse_training)
    feedback: what a malformed reply is answered with: "specific" (agent/prompts.FEEDBACK) or
              "fixed" (the training loop's two messages, agent/prompts.TRAINING_*)
    crop:     "demo" (56 raw px on the last image shown) or "training" (28 px in the last image's
              coordinates, onto the last retrieved page)
    context:  how the model's own replies are sent back: "verbatim" or "tags" (agent/parsing.tags_only)
    """

    name: str
    replies: str
    feedback: str
    crop: str
    context: str
    description: str

    def to_dict(self) -> dict:
        return asdict(self)


PROFILES = {
    p.name: p
    for p in (
        ProtocolProfile("training", "training", "fixed", "training", "tags",
                        "the training loop's validation mode, which produced the released weights and the paper's numbers"),
        ProtocolProfile("demo", "strict", "specific", "demo", "verbatim",
                        "the authors' demo client (its crop, replies sent back verbatim) with our checks and specific feedback"),
        ProtocolProfile("explain", "training", "specific", "training", "tags",
                        "the training loop, but a malformed reply is told exactly what was wrong (for models that benefit)"),
    )
}
DEFAULT_PROFILE = "training"  # what the released model was trained on (CLI and Settings default)
LEGACY_PROFILE = "demo"  # what a trajectory that records no profile was run with (all before profiles existed)


def profile(name: str) -> ProtocolProfile:
    """The profile called `name`; ValueError naming the choices otherwise."""
    try:
        return PROFILES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown protocol profile {name!r}; choose one of: {', '.join(PROFILES)}") from None


def profile_of(trajectory: Trajectory) -> ProtocolProfile:
    """The profile a trajectory was run with (`config["protocol"]`; older ones ran the demo rules)."""
    return profile((trajectory.config or {}).get("protocol", LEGACY_PROFILE))


PAGE_MEMORY_BLOCKS = 4  # Pillow blocks of 16 MB: one decoded 5334x3000 page (stored as 4 bytes per pixel)


def reuse_page_memory(blocks: int = PAGE_MEMORY_BLOCKS) -> None:
    """Let Pillow keep `blocks` freed image blocks for reuse instead of returning them to the OS.

    By default Pillow frees every image's memory at once, so each search turn asks the kernel for
    ~64 MB of fresh, zeroed pages to decode the next full-size page into; those page faults were
    about 30 ms of a 158 ms search turn (bench/agent_turn_cost.py). Reusing freed blocks changes
    no pixel. Process-wide, so entry points (app, CLI, benchmarks) call it, not imports.
    """
    Image.core.set_blocks_max(blocks)


def image_url(jpeg: bytes) -> str:
    return IMAGE_URL_PREFIX + base64.b64encode(jpeg).decode("ascii")


def image_part(jpeg: bytes) -> dict:
    """One image content part of an OpenAI chat message, as the reference sends it."""
    return {"type": "image_url", "image_url": {"url": image_url(jpeg)}}


def text_part(text: str) -> dict:
    return {"type": "text", "text": text}


def crop_box(bbox: Box, input_size: tuple[int, int], raw_size: tuple[int, int], padding: int = CROP_PADDING) -> Box:
    """Map a bbox in model pixels to the padded, clamped crop box in raw pixels (float, unrounded)."""
    iw, ih = input_size
    rw, rh = raw_size
    x1, y1, x2, y2 = bbox[0] * rw / iw, bbox[1] * rh / ih, bbox[2] * rw / iw, bbox[3] * rh / ih
    return [max(x1 - padding, 0), max(y1 - padding, 0), min(x2 + padding, rw), min(y2 + padding, rh)]


def pil_crop_box(box: Box) -> tuple[int, int, int, int]:
    """The integer box `Image.crop` actually cuts for a float box (it rounds each coordinate)."""
    return tuple(int(round(v)) for v in box)  # type: ignore[return-value]


def crop_region(view: ImageView, bbox: Box, padding: int = CROP_PADDING) -> Box:
    """The page region (page pixels, integer-valued) a bbox on `view` crops, padding and clamping included.

    Mapping uses the view's raw size (its region in page pixels), so cropping the page at this region
    gives exactly the pixels the reference gets by cropping its in-memory raw image of the view.
    """
    box = pil_crop_box(crop_box(bbox, view.input_size, view.raw_size, padding))
    x0, y0 = view.region[0], view.region[1]
    return [float(x0 + box[0]), float(y0 + box[1]), float(x0 + box[2]), float(y0 + box[3])]


def training_crop_box(bbox: Box, last_input_size: tuple[int, int], page_size: tuple[int, int],
                      padding: float = TRAINING_CROP_PADDING) -> Box | None:
    """The training loop's crop: page pixels of the region cut, or None when the crop fails.

    `bbox` is in the pixels of the last image in context (`last_input_size`, the size sent), the
    crop is cut from the last retrieved page (`page_size`, raw pixels):
        padded = [x1 - 28, y1 - 28, x2 + 28, y2 + 28]
        area   = [int(raw_w * padded[0] / w), int(raw_h * padded[1] / h), int(raw_w * padded[2] / w), int(raw_h * padded[3] / h)]
        area   = [max(0, a0), max(0, a1), min(raw_w, a2), min(raw_h, a3)]
    It fails where the training loop's crop raises: a coordinate too large to convert, nothing left
    to cut (PIL refuses right < left; an empty crop cannot be resized), or a crop so thin that the
    model's image processor refuses it (aspect ratio over 200 once resized).
    """
    w, h = last_input_size
    rw, rh = page_size
    x1, y1, x2, y2 = bbox[0] - padding, bbox[1] - padding, bbox[2] + padding, bbox[3] + padding
    try:
        area = [int(rw * x1 / w), int(rh * y1 / h), int(rw * x2 / w), int(rh * y2 / h)]
    except (OverflowError, ValueError):  # inf or nan after the float conversion
        return None
    area = [max(0, area[0]), max(0, area[1]), min(rw, area[2]), min(rh, area[3])]
    cw, ch = area[2] - area[0], area[3] - area[1]
    if cw < 1 or ch < 1:
        return None
    sw, sh = input_size(cw, ch)
    if max(sw, sh) / min(sw, sh) > MAX_ASPECT_RATIO:
        return None
    return [float(v) for v in area]


def bbox_on_page(crop: str, bbox: Box, acted_on: ImageView, page_size: tuple[float, float]) -> Box:
    """Where a bbox lands on its page by the `crop` rule, before padding and clamping (page pixels).

    demo: in the pixels of the image it was written on (`acted_on`, a page or a crop of it);
    training: the last image's pixels scaled onto the whole page, as the training loop crops.
    """
    if crop == "demo":
        return acted_on.model_to_page(list(bbox))
    w, h = acted_on.input_size
    rw, rh = page_size
    return [rw * bbox[0] / w, rh * bbox[1] / h, rw * bbox[2] / w, rh * bbox[3] / h]


def crop_page(page: Image.Image, region: Box) -> Image.Image:
    return page.crop(pil_crop_box(region))


def page_view(file: str, page_id: str, page_image_file: str, page_size: tuple[int, int]) -> ImageView:
    """The view of a whole page as a search shows it."""
    w, h = page_size
    return ImageView(file=file, page_id=page_id, page_image_file=page_image_file, region=[0.0, 0.0, float(w), float(h)], input_size=input_size(w, h))


def region_view(file: str, parent: ImageView, region: Box) -> ImageView:
    """The view of a crop of `parent`'s page."""
    w, h = int(region[2] - region[0]), int(region[3] - region[1])
    return ImageView(file=file, page_id=parent.page_id, page_image_file=parent.page_image_file, region=list(region), input_size=input_size(w, h))
