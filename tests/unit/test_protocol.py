"""The image side of the protocol against numbers computed by hand (see the comments)."""
from __future__ import annotations

import base64
import io
import math

import numpy as np
import pytest
from PIL import Image

from agent import protocol
from agent.protocol import (
    DEFAULT_PROFILE, MAX_PIXELS, MIN_PIXELS, PROFILES, crop_box, crop_page, crop_region, input_size, page_view, prepare_image,
    profile, profile_of, region_view, training_crop_box,
)
from agent.trajectory import Trajectory


def test_pixel_budget_constants():
    assert (MIN_PIXELS, MAX_PIXELS) == (200_704, 401_408)


@pytest.mark.parametrize("size, expected", [
    # 5334*3000 = 16,002,000 > max: f = sqrt(401408/16002000) = 0.158382; 844.81 -> 844, 475.15 -> 475
    ((5334, 3000), (844, 475)),
    # 1024*768 = 786,432 > max: f = sqrt(0.5104167) = 0.714435; 731.58 -> 731, 548.69 -> 548
    ((1024, 768), (731, 548)),
    # 300*200 = 60,000 < min: f = sqrt(200704/60000) = 1.828953; 548.69 -> 548, 365.79 -> 365
    ((300, 200), (548, 365)),
    # inside the budget: unchanged
    ((500, 500), (500, 500)),
    ((448, 448), (448, 448)),
    # exactly at the bounds: unchanged (strict inequalities, as in the reference)
    ((200_704, 1), (200_704, 1)),
    ((401_408, 1), (401_408, 1)),
    # 744*743 = 552,792 > max: f = sqrt(0.726146) = 0.852142; 633.99 -> 633, 633.14 -> 633
    ((744, 743), (633, 633)),
])
def test_input_size(size, expected):
    assert input_size(*size) == expected


def test_input_size_truncates_never_rounds_up():
    for w, h in [(5334, 3000), (1024, 768), (3000, 5334), (1000, 1000), (2481, 3508)]:
        iw, ih = input_size(w, h)
        f = math.sqrt(MAX_PIXELS / (w * h))
        assert (iw, ih) == (int(w * f), int(h * f))
        assert iw * ih <= MAX_PIXELS


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "P", "CMYK"])
def test_prepare_image_resizes_plainly_and_encodes_rgb_jpeg(mode):
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (768, 1024, 3), dtype=np.uint8)).convert(mode)
    resized, jpeg = prepare_image(image)
    assert resized.size == (731, 548) and resized.mode == "RGB"
    # plain PIL resize (its default filter) first, then RGB: the reference order
    assert np.array_equal(np.asarray(resized), np.asarray(image.resize((731, 548)).convert("RGB")))
    decoded = Image.open(io.BytesIO(jpeg))
    assert decoded.format == "JPEG" and decoded.size == (731, 548) and decoded.mode == "RGB"


def test_image_part_is_a_data_url():
    part = protocol.image_part(b"\xff\xd8abc")
    assert part == {"type": "image_url", "image_url": {"url": "data:image;base64," + base64.b64encode(b"\xff\xd8abc").decode()}}


def test_crop_box_maps_pads_and_clamps():
    # bbox [100, 50, 200, 150] on the 844x475 input of a 5334x3000 page:
    # x: 100*5334/844 = 631.99 -> -56 = 575.99; 200*5334/844 = 1263.98 -> +56 = 1319.98
    # y: 50*3000/475 = 315.79 -> -56 = 259.79; 150*3000/475 = 947.37 -> +56 = 1003.37
    box = crop_box([100, 50, 200, 150], (844, 475), (5334, 3000))
    assert box == pytest.approx([575.9905, 259.7895, 1319.9810, 1003.3684], abs=1e-3)
    # the whole image: padding clamps to the raw image
    assert crop_box([0, 0, 844, 475], (844, 475), (5334, 3000)) == [0, 0, 5334, 3000]
    # a box slightly past the edge is clamped as well
    assert crop_box([800, 400, 870, 500], (844, 475), (5334, 3000))[2:] == [5334, 3000]


def test_crop_region_rounds_like_pil_and_composes():
    page = page_view("p.jpg", "aliyun4_1", "/x/aliyun4_1.jpg", (5334, 3000))
    assert page.region == [0.0, 0.0, 5334.0, 3000.0] and page.input_size == (844, 475)
    first = crop_region(page, [100, 50, 200, 150])
    assert first == [576.0, 260.0, 1320.0, 1003.0]  # PIL rounds each float coordinate
    crop = region_view("c.jpg", page, first)
    assert crop.raw_size == (744, 743) and crop.input_size == (633, 633)
    # crop of the crop, bbox [10, 20, 110, 120] in the 633x633 input of the 744x743 raw crop:
    # x: 10*744/633 = 11.75 -> -56 -> 0; 110*744/633 = 129.29 -> +56 = 185.29 -> 185
    # y: 20*743/633 = 23.48 -> -56 -> 0; 120*743/633 = 140.85 -> +56 = 196.85 -> 197
    # page region = crop origin (576, 260) + [0, 0, 185, 197]
    assert crop_region(crop, [10, 20, 110, 120]) == [576.0, 260.0, 761.0, 457.0]


def test_crop_of_a_crop_gives_the_reference_pixels():
    """The reference keeps each crop in memory and crops it again; we crop the page at a composed
    region. Both must give the same pixels."""
    rng = np.random.default_rng(1)
    page = Image.fromarray(rng.integers(0, 255, (3000, 5334, 3), dtype=np.uint8))
    view = page_view("p.jpg", "p", "p.jpg", page.size)
    raw, inp = page, page.resize(view.input_size)
    for bbox in ([100, 50, 200, 150], [10, 20, 110, 120], [300, 300, 500, 420]):
        # the reference: map with the raw image in memory, pad, clamp, crop it
        ref_box = crop_box(bbox, inp.size, raw.size)
        raw = raw.crop(ref_box)
        inp = raw.resize(input_size(*raw.size))
        # ours: a region of the page
        region = crop_region(view, bbox)
        view = region_view("c.jpg", view, region)
        ours = protocol.crop_page(page, region)
        assert ours.size == raw.size == view.raw_size
        assert np.array_equal(np.asarray(ours), np.asarray(raw))
        assert view.input_size == inp.size


def test_reusing_page_memory_changes_no_byte():
    """reuse_page_memory() only keeps freed Pillow blocks for reuse: every JPEG the model is sent
    stays byte-identical to Pillow's default, including for images decoded into reused memory."""
    rng = np.random.default_rng(0)
    page = Image.fromarray(rng.integers(0, 256, (1500, 2667, 3), dtype=np.uint8))
    buf = io.BytesIO()
    page.save(buf, format="JPEG")

    def jpegs() -> list[bytes]:
        out = []
        for _ in range(3):  # the second and third decode land in blocks freed by the first
            image = Image.open(io.BytesIO(buf.getvalue()))
            image.load()
            out.append(prepare_image(image)[1])
            out.append(prepare_image(image.crop((100, 200, 1900, 1300)))[1])
        return out

    Image.core.set_blocks_max(0)
    default = jpegs()
    try:
        protocol.reuse_page_memory()
        assert Image.core.get_blocks_max() == protocol.PAGE_MEMORY_BLOCKS
        reused = jpegs()
    finally:
        Image.core.set_blocks_max(0)
    assert reused == default
    assert default[0] == default[2] == default[4]


# --- the training loop's crop, by hand (page 1190x1684 shown at 532x753) ----------------------------------
PAGE, SHOWN = (1190, 1684), (532, 753)


@pytest.mark.parametrize("bbox, last_input, padding, expected", [
    # padded by 28 in the shown image's pixels, then int(raw * v / shown): 32*1190/532 = 71.6 -> 71, ...
    ([60, 40, 480, 140], SHOWN, 28, [71.0, 26.0, 1136.0, 375.0]),
    ([60, 40, 480, 140], SHOWN, 0, [134.0, 89.0, 1073.0, 313.0]),  # training rollouts: no padding
    ([0, 0, 532, 753], SHOWN, 28, [0.0, 0.0, 1190.0, 1684.0]),  # clamped to the page
    ([100, 0, 60, 50], SHOWN, 28, [161.0, 0.0, 196.0, 174.0]),  # inverted by less than the padding: still a crop
    # after a crop of 600x400 the box is in the crop's pixels but scaled onto the WHOLE page
    ([100, 100, 200, 200], (600, 400), 28, [142.0, 303.0, 452.0, 959.0]),
])
def test_training_crop_box_by_hand(bbox, last_input, padding, expected):
    assert training_crop_box(bbox, last_input, PAGE, padding) == expected


@pytest.mark.parametrize("bbox, padding", [
    ([600, 0, 700, 50], 28),  # right of the image: right < left after clamping (PIL refuses)
    ([200, 0, 100, 50], 28),  # inverted by more than the padding
    ([0, 100, 532, 100.5], 0),  # 1190x1 px: resized to 15446x12, which Qwen2.5-VL's processor refuses
    ([float("inf"), 0, 10, 10], 28),  # int(inf) raises in the reference
    ([0, 800, 10, 900], 28),  # below the image
])
def test_training_crop_box_fails_where_the_reference_raises(bbox, padding):
    assert training_crop_box(bbox, SHOWN, PAGE, padding) is None


def test_training_crop_box_agrees_with_pil_on_the_pixels():
    page = Image.effect_noise(PAGE, 64).convert("RGB")
    region = training_crop_box([60, 40, 480, 140], SHOWN, PAGE)
    a = np.asarray(page.crop(tuple(int(v) for v in region)))
    assert a.shape == (375 - 26, 1136 - 71, 3)
    assert np.array_equal(np.asarray(crop_page(page, region)), a)


def test_profiles():
    assert set(PROFILES) == {"demo", "training", "explain"} and DEFAULT_PROFILE == "training"
    training, demo, explain = profile("training"), profile("demo"), profile("explain")
    assert (training.replies, training.feedback, training.crop, training.context) == ("training", "fixed", "training", "tags")
    assert (demo.replies, demo.feedback, demo.crop, demo.context) == ("strict", "specific", "demo", "verbatim")
    # explain differs from training in the feedback only, so comparing the two runs isolates its effect
    assert {k for k, v in explain.to_dict().items() if v != training.to_dict()[k]} == {"name", "feedback", "description"}
    with pytest.raises(ValueError, match="unknown protocol profile 'fast'; choose one of: training, demo, explain"):
        profile("fast")
    old = Trajectory(question="q", policy={"name": "x"}, config={"max_turns": 10})
    assert profile_of(old) is demo  # recorded before profiles existed: the demo rules
    assert profile_of(Trajectory(question="q", policy={"name": "x"}, config={"protocol": "explain"})) is explain
