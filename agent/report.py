"""A trajectory as one self-contained HTML file, to send to someone who does not run the app.

Everything is inside the file: the images the model saw as base64 JPEG data URIs, the page it
acted on with the crop box drawn, and the styles; no scripts, no external requests (a
Content-Security-Policy forbids both). Every piece of text that came from a model, a user or a
file name goes through `html.escape`, so a reply containing `<script>` shows as text.
Images are read only through `trajectory.image_path` (inside the trajectory's own folder) and are
embedded only when they decode as a JPEG or PNG; anything else is reported as unreadable, so the
report never carries a file a record names outside its folder, or bytes that are not a picture.
No Streamlit here: the Trajectories page only offers the result for download.
"""
from __future__ import annotations

import base64
import html
import io
import logging
import warnings
from pathlib import Path

from PIL import Image, ImageDraw

from agent.trajectory import ImageView, Trajectory, TrajectoryFormatError, Turn, image_path

log = logging.getLogger(__name__)

CROP_COLOUR = (214, 39, 40)
BBOX_COLOUR = (31, 119, 180)

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 2em; }
pre { white-space: pre-wrap; word-wrap: break-word; background: #f6f8fa; padding: .6em; border-radius: 4px; }
table { border-collapse: collapse; font-size: .9em; } td, th { border: 1px solid #ddd; padding: .25em .6em; text-align: left; }
.turn { border: 1px solid #ccc; border-radius: 6px; padding: 1em; margin: 1em 0; }
.row { display: flex; gap: 1em; flex-wrap: wrap; } .row > div { flex: 1 1 300px; min-width: 0; }
img { max-width: 100%; border: 1px solid #ddd; }
.answer { font-size: 1.3em; border-left: 4px solid #1f9d55; padding-left: .6em; }
.error { color: #b00020; } .meta { color: #666; font-size: .9em; } .shown { font-weight: bold; color: #1f9d55; }
"""


def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _data_uri(data: bytes) -> str:
    mime = "image/png" if data.startswith(b"\x89PNG") else "image/jpeg"
    return f"data:{mime};base64," + base64.b64encode(data).decode("ascii")


def _picture(data: bytes) -> Image.Image | None:
    """`data` decoded, if it is a JPEG or PNG picture (None otherwise: never embedded)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=["JPEG", "PNG"])
            image.load()
        return image
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, Image.DecompressionBombWarning):
        return None


def _page_to_view(view: ImageView, box: list[float]) -> list[float]:
    """A page-pixel box in `view`'s model pixels (the inverse of ImageView.model_to_page)."""
    rw, rh = view.raw_size
    iw, ih = view.input_size
    x0, y0 = view.region[0], view.region[1]
    return [(box[0] - x0) * iw / rw, (box[1] - y0) * ih / rh, (box[2] - x0) * iw / rw, (box[3] - y0) * ih / rh]


def _with_boxes(image: Image.Image, boxes: list[tuple[list[float], tuple[int, int, int]]]) -> bytes:
    image = image.convert("RGB")
    draw = ImageDraw.Draw(image)
    width = max(2, image.width // 200)
    for box, colour in boxes:
        x1, y1, x2, y2 = (round(v) for v in box)
        draw.rectangle([min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)], outline=colour, width=width)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=88)
    return out.getvalue()


class _Images:
    """The pictures the model saw: in memory, or in the trajectory's folder (and nowhere else)."""

    def __init__(self, trajectory: Trajectory, folder: Path | None):
        self.trajectory, self.folder = trajectory, folder

    def get(self, view: ImageView) -> tuple[bytes, Image.Image] | None:
        """(bytes, decoded picture) of `view`, or None if it is missing, unreadable or not a picture."""
        data = self.trajectory.images.get(view.file)
        if data is None and self.folder is not None:
            try:
                data = image_path(self.folder, view).read_bytes()
            except (TrajectoryFormatError, OSError) as e:
                log.info("report: no picture for %r: %s", view.file, e)
                return None
        picture = _picture(data) if data is not None else None
        return (data, picture) if picture is not None else None


def _figure(data: bytes | None, caption: str) -> str:
    if data is None:
        return f"<div><p class='meta'>{_e(caption)}: image missing or unreadable</p></div>"
    return f"<div><img alt='{_e(caption)}' src='{_data_uri(data)}'><p class='meta'>{_e(caption)}</p></div>"


def _turn_html(turn: Turn, images: _Images) -> str:
    parts = [f"<div class='turn'><h2>Turn {turn.index + 1}: {_e(turn.action)}</h2>"]
    if turn.thought:
        parts.append(f"<p class='meta'>Thought</p><pre>{_e(turn.thought)}</pre>")
    if turn.action == "invalid":
        parts.append(f"<p class='error'>Invalid reply: {_e(turn.error or '')}</p><pre>{_e(turn.raw_text)}</pre>")
    else:
        parts.append(f"<p class='meta'>Action</p><pre>&lt;{_e(turn.action)}&gt;{_e(turn.argument)}&lt;/{_e(turn.action)}&gt;</pre>")
    if turn.feedback:
        parts.append(f"<p class='meta'>Told the model</p><pre>{_e(turn.feedback)}</pre>")
    if turn.hits:
        rows = "".join(
            f"<tr class='{'shown' if h.get('page_id') == turn.shown_page_id else ''}'><td>{_e(h.get('rank'))}</td>"
            f"<td>{_e(h.get('page_id'))}</td><td>{float(h.get('score', 0)):.4f}</td>"
            f"<td>{'shown to the model' if h.get('page_id') == turn.shown_page_id else ''}</td></tr>"
            for h in turn.hits
        )
        parts.append(f"<table><tr><th>rank</th><th>page</th><th>score</th><th></th></tr>{rows}</table>")
    figures = []
    if turn.action == "bbox" and turn.acted_on is not None:
        found = images.get(turn.acted_on)
        acted = None
        if found is not None:
            boxes = [(_page_to_view(turn.acted_on, turn.bbox_page), CROP_COLOUR)] if turn.bbox_page else []
            if turn.bbox_model:
                boxes.append((turn.bbox_model, BBOX_COLOUR))
            acted = _with_boxes(found[1], boxes)
        figures.append(_figure(acted, f"{turn.acted_on.page_id} with the crop box (red: padded crop, blue: the model's bbox)"))
    if turn.observation is not None:
        what = "zoomed crop" if turn.action == "bbox" else "page shown"
        found = images.get(turn.observation)
        figures.append(_figure(found[0] if found else None, f"{what}: {turn.observation.page_id}, {turn.observation.input_size[0]}x{turn.observation.input_size[1]} px"))
    if figures:
        parts.append("<div class='row'>" + "".join(figures) + "</div>")
    parts.append(f"<p class='meta'>model {turn.model_seconds:.1f} s, tools {turn.tool_seconds:.2f} s</p>")
    if turn.action != "invalid":  # an invalid reply is already shown in full above
        parts.append(f"<details><summary class='meta'>Raw reply</summary><pre>{_e(turn.raw_text)}</pre></details>")
    parts.append("</div>")
    return "".join(parts)


def trajectory_html(trajectory: Trajectory, folder: Path | None = None) -> str:
    """The whole report. `folder` is where the trajectory is saved (for images not held in memory)."""
    images = _Images(trajectory, Path(folder) if folder else None)
    policy = trajectory.policy or {}
    head = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; img-src data:; style-src 'unsafe-inline'\">",
        f"<title>VRAG trajectory {_e(trajectory.id)}</title><style>{STYLE}</style></head><body>",
        f"<h1>VRAG Studio trajectory {_e(trajectory.id)}</h1>",
        f"<p class='meta'>{_e(trajectory.created_at)} · {_e(policy.get('description') or policy.get('name', ''))}</p>",
    ]
    if policy.get("name") == "offline":
        head.append("<p class='error'>Offline policy: no model was reasoning; the thoughts were written by rules.</p>")
    head.append(f"<h2>Question</h2><pre>{_e(trajectory.question)}</pre>")
    if trajectory.answer is not None:
        label = "Answer" if trajectory.finished else "No answer within the turn budget"
        head.append(f"<h2>{label}</h2><p class='answer'>{_e(trajectory.answer)}</p>")
    if trajectory.error:
        head.append(f"<p class='error'>{_e(trajectory.error)}</p>")
    if trajectory.gold:
        gold = trajectory.gold
        head.append(f"<p class='meta'>Reference answer: {_e(gold.get('answer', ''))}; gold pages: {_e(', '.join(gold.get('pages', [])))}</p>")
    if trajectory.rewards:
        cells = "".join(f"<tr><td>{_e(k)}</td><td>{v:.3f}</td></tr>" for k, v in trajectory.rewards.items())
        head.append(f"<table><tr><th>reward</th><th>value</th></tr>{cells}</table>")
    config = ", ".join(f"{k}={v}" for k, v in (trajectory.config or {}).items())
    head.append(f"<p class='meta'>{_e(config)}</p>")
    body = [_turn_html(turn, images) for turn in trajectory.turns]
    return "".join(head + body + ["</body></html>"])
