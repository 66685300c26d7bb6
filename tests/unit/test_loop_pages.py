"""What the loop holds of its pages (agent/loop.py `_Pages`): a search turn sends the searcher's model
view and decodes nothing; the full page is decoded on its first crop, kept for the crops after it,
and at most one decoded page is alive at a time, none once the episode is over. A searcher that can
decode a page's top rows (`page_top`) is asked for the rows down to the crop's bottom only."""
from __future__ import annotations

import gc
import io
import weakref

from PIL import Image

from agent.loop import AgentConfig, new_trajectory, run_episode
from agent.page_decode import decode_top
from support.agent_doubles import MemorySearcher, ScriptedPolicy, noise_page
from search_engine.model_views import make_view
from support.reference_client import ref_crop, ref_process

T = "<think>t</think>"
PAGES = {f"doc_{i}": noise_page(1400, 900, i) for i in range(1, 4)}  # over max_pixels: views are resized


class CountingSearcher(MemorySearcher):
    """Model views made once up front; every `page_image` is a fresh decoded copy, watched by weakref."""

    def __init__(self, pages):
        super().__init__(pages)
        self.views = {page_id: make_view(image) for page_id, image in pages.items()}
        self.decoded: list[str] = []
        self.held_while_decoding: list[int] = []
        self.alive: list[weakref.ref] = []  # (PIL images are unhashable: no WeakSet)

    def model_view(self, page_id):
        return self.views[page_id]

    def page_image(self, page_id):
        self.decoded.append(page_id)
        self.held_while_decoding.append(self.live_pages())  # the previous page must be let go first
        image = self.pages[page_id].copy()
        self.alive.append(weakref.ref(image))
        return image

    def live_pages(self) -> int:
        gc.collect()
        return sum(1 for ref in self.alive if ref() is not None)


def episode(script, searcher, **config):
    policy = ScriptedPolicy(script)
    config = AgentConfig(**config)
    trajectory = new_trajectory("What is shown?", policy, config)
    return trajectory, run_episode(trajectory, policy, searcher, config)


def test_search_turns_decode_nothing_and_a_run_of_crops_decodes_its_page_once():
    searcher = CountingSearcher(PAGES)
    script = [T + "<search>a</search>", T + "<search>b</search>", T + "<bbox>[10, 10, 300, 200]</bbox>",
              T + "<bbox>[20, 20, 200, 150]</bbox>", T + "<search>c</search>", T + "<bbox>[0, 0, 100, 100]</bbox>",
              T + "<answer>x</answer>"]
    trajectory, turns = episode(script, searcher)
    live = []
    for turn in turns:
        live.append(searcher.live_pages())
        if turn.action == "search":
            assert turn.observation is not None
    shown = [t.shown_page_id for t in trajectory.turns if t.action == "search"]
    assert len(set(shown)) == 3
    # two searches decoded nothing; the crops of the second page decoded it once; the third page once
    assert searcher.decoded == [shown[1], shown[2]] and searcher.held_while_decoding == [0, 0]
    assert live == [0, 0, 1, 1, 1, 1, 1]  # at most one decoded page at each turn...
    assert searcher.live_pages() == 0  # ...and none once the episode is over
    # what was sent is the reference's: the page view, then crops of the raw page and of the crop
    raw = PAGES[shown[1]]
    page_shown, page_jpeg = ref_process(raw)
    crop1 = ref_crop(raw, page_shown, [10, 10, 300, 200])
    crop1_shown, crop1_jpeg = ref_process(crop1)
    crop2_jpeg = ref_process(ref_crop(crop1, crop1_shown, [20, 20, 200, 150]))[1]
    files = [t.observation.file for t in trajectory.turns[1:4]]
    assert [trajectory.images[f] for f in files] == [page_jpeg, crop1_jpeg, crop2_jpeg]


def test_the_decoded_page_goes_when_the_episode_is_closed_early():
    searcher = CountingSearcher(PAGES)
    trajectory, turns = episode([T + "<search>a</search>", T + "<bbox>[10, 10, 300, 200]</bbox>"] + [T + "<search>q</search>"] * 3,
                                searcher)
    next(turns), next(turns)
    assert searcher.live_pages() == 1
    turns.close()  # the consumer stopped reading (the app's Stop button)
    assert searcher.live_pages() == 0


def test_the_training_crop_decodes_the_last_retrieved_page_once():
    searcher = CountingSearcher(PAGES)
    script = [T + "<search>a</search>", T + "<bbox>[10, 10, 300, 200]</bbox>", T + "<bbox>[5, 5, 100, 100]</bbox>",
              T + "<answer>x</answer>"]
    trajectory, turns = episode(script, searcher, protocol="training")
    for _ in turns:
        assert searcher.live_pages() <= 1
    assert [t.action for t in trajectory.turns] == ["search", "bbox", "bbox", "answer"]
    assert searcher.decoded == [trajectory.turns[0].shown_page_id]


def test_a_page_that_changed_since_it_was_shown_is_a_search_error():
    searcher = CountingSearcher(PAGES)
    searcher.views = {page_id: make_view(Image.new("RGB", (1000, 1000))) for page_id in PAGES}  # shown at another size
    trajectory, turns = episode([T + "<search>a</search>", T + "<bbox>[10, 10, 300, 200]</bbox>", T + "<answer>x</answer>"], searcher)
    list(turns)
    assert "changed since it was shown" in trajectory.error and len(trajectory.turns) == 2
    assert searcher.live_pages() == 0


def test_a_searcher_without_views_still_works_and_decodes_each_page_once():
    class NoViews(CountingSearcher):
        model_view = None  # as a searcher written before model views

    searcher = NoViews(PAGES)
    trajectory, turns = episode([T + "<search>a</search>", T + "<bbox>[10, 10, 300, 200]</bbox>", T + "<answer>x</answer>"], searcher)
    list(turns)
    page = trajectory.turns[0].shown_page_id
    assert searcher.decoded == [page]  # the view was made from the decoded page, which the crop reused
    assert trajectory.images[trajectory.turns[0].observation.file] == ref_process(PAGES[page])[1]
    assert searcher.live_pages() == 0


class JpegSearcher(CountingSearcher):
    """Pages kept as baseline JPEG files (bytes), decoded by the real `decode_top`, each decode recorded."""

    def __init__(self, pages):
        super().__init__(pages)
        self.files = {}
        for page_id, image in pages.items():
            buf = io.BytesIO()
            image.save(buf, format="JPEG", quality=90)
            self.files[page_id] = buf.getvalue()
        self.pages = {page_id: decode_top(data).image for page_id, data in self.files.items()}  # what a full decode gives
        self.views = {page_id: make_view(image) for page_id, image in self.pages.items()}
        self.rows: list[tuple[str, int | None]] = []

    def page_top(self, page_id, rows):
        self.rows.append((page_id, rows))
        return decode_top(self.files[page_id], rows)


def test_a_crop_decodes_its_page_down_to_its_bottom_row_only_and_sends_the_reference_crop():
    searcher = JpegSearcher(PAGES)
    script = [T + "<search>a</search>", T + "<bbox>[10, 10, 300, 200]</bbox>", T + "<bbox>[20, 20, 200, 150]</bbox>",
              T + "<answer>x</answer>"]
    trajectory, turns = episode(script, searcher)
    list(turns)
    page = trajectory.turns[0].shown_page_id
    first_crop = trajectory.turns[1].bbox_page
    # one decode, down to the first crop's bottom row; the crop of the crop lies inside those rows
    assert searcher.rows == [(page, int(first_crop[3]))] and first_crop[3] < PAGES[page].height
    raw = searcher.pages[page]
    page_shown, _ = ref_process(raw)
    crop1 = ref_crop(raw, page_shown, [10, 10, 300, 200])
    crop1_shown, crop1_jpeg = ref_process(crop1)
    crop2_jpeg = ref_process(ref_crop(crop1, crop1_shown, [20, 20, 200, 150]))[1]
    assert [trajectory.images[t.observation.file] for t in trajectory.turns[1:3]] == [crop1_jpeg, crop2_jpeg]


def test_a_later_crop_reaching_lower_decodes_the_whole_page_once_more():
    searcher = JpegSearcher(PAGES)
    script = [T + "<search>a</search>", T + "<bbox>[10, 10, 300, 100]</bbox>", T + "<bbox>[10, 300, 300, 470]</bbox>",
              T + "<bbox>[10, 10, 100, 100]</bbox>", T + "<answer>x</answer>"]
    trajectory, turns = episode(script, searcher, protocol="training")  # every crop is cut from the whole page
    list(turns)
    page = trajectory.turns[0].shown_page_id
    assert [t.action for t in trajectory.turns] == ["search", "bbox", "bbox", "bbox", "answer"]
    assert searcher.rows == [(page, int(trajectory.turns[1].bbox_page[3])), (page, None)]
    raw = searcher.pages[page]
    for turn in trajectory.turns[1:4]:
        expected = ref_process(raw.crop(tuple(int(v) for v in turn.bbox_page)))[1]
        assert trajectory.images[turn.observation.file] == expected
