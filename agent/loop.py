"""The VRAG reasoning loop: a generator that yields each turn as soon as it is complete.

Every turn: rebuild the chat from the trajectory, ask the policy, parse the reply, act, record.
- search: show the first hit not shown before in this episode (each page at most once);
- bbox: crop a page region (padding, clamping: agent/protocol.py), by the profile's crop rule;
- answer: record it and stop;
- a malformed reply becomes an "invalid" turn whose feedback answers it (the profile's style).
The protocol profile (`AgentConfig.protocol`, agent/protocol.py: training, demo, explain) decides
which replies are malformed, what they are answered with, how a bbox is cropped and how replies are
sent back; it is recorded in `trajectory.config["protocol"]`.
The observation before the last call of the budget carries the final-turn nudge; a budget spent
without an answer leaves the reference's fallback text as the answer (finished stays False).
Infrastructure failures (PolicyError, SearchError) end the episode cleanly with
`trajectory.error` set (and `trajectory.error_hints`, what to do about it) and the turns so far
kept; so does passing `AgentConfig.episode_timeout`. Anything else is a bug and raises. Failures
are logged at INFO only: the caller reports `trajectory.error` to the person, once.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, replace
from typing import Callable, Iterator, TypeVar

from PIL import Image

from agent import protocol
from agent.conversation import build_messages
from agent.deadline import Deadline, DeadlinePassed, run_before
from agent.page_decode import PageTop
from agent.parsing import ParsedReply, read_reply
from agent.policies.base import Policy, PolicyError
from agent.protocol import LEGACY_PROFILE, ProtocolProfile
from agent.prompts import ALL_PAGES_SHOWN, FINAL_TURN_NUDGE, NO_ANSWER, NO_PAGES_FOUND, feedback_message
from agent.search import QueryRejected, Searcher, SearchError, decoded_top
from agent.trajectory import ImageView, Trajectory, Turn
from search_engine.model_views import ModelView, make_view
from search_engine.query import MAX_TOP_K

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class AgentConfig:
    max_turns: int = 10  # model calls per episode (the reference UI offers 3..10)
    top_k: int = 10  # hits asked of the search engine per query (the reference uses 10)
    # the protocol profile (agent/protocol.py). The library keeps today's "demo" rules; the CLI and
    # Settings default to protocol.DEFAULT_PROFILE ("training", what the released model was trained on)
    protocol: str = LEGACY_PROFILE
    # seconds for the whole episode (None: no limit). A model call or tool call still running when it
    # passes is abandoned: the episode ends at once with `trajectory.error` set and the turns so far
    # kept. The vLLM policy's call then stops reading within moments; an in-process model, or a local
    # search loading its embedder, finishes in the background and its result is dropped.
    episode_timeout: float | None = None

    def __post_init__(self):
        if isinstance(self.max_turns, bool) or not isinstance(self.max_turns, int) or self.max_turns < 1:
            raise ValueError(f"max_turns must be a positive integer, got {self.max_turns!r}")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or not 1 <= self.top_k <= MAX_TOP_K:
            raise ValueError(f"top_k must be an integer from 1 to {MAX_TOP_K}, got {self.top_k!r}")
        protocol.profile(self.protocol)  # ValueError naming the profiles
        timeout = self.episode_timeout
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout < math.inf):
            raise ValueError(f"episode_timeout must be a positive number of seconds, got {timeout!r}")

    def to_dict(self) -> dict:
        """The settings recorded on a trajectory (limits left unset are left out)."""
        return {k: v for k, v in asdict(self).items() if v is not None}


def new_trajectory(question: str, policy: Policy, config: AgentConfig, gold: dict | None = None, **extra_config) -> Trajectory:
    """A fresh trajectory recording who answers (`policy.describe()`) and with which settings."""
    return Trajectory(question=question, policy=policy.describe(), config={**config.to_dict(), **extra_config}, gold=gold or {})


def last_view(trajectory: Trajectory) -> ImageView | None:
    """The last image sent to the model (what a bbox refers to)."""
    for turn in reversed(trajectory.turns):
        if turn.observation is not None:
            return turn.observation
    return None


def _join(*texts: str | None) -> str | None:
    parts = [t for t in texts if t]
    return "\n".join(parts) if parts else None


class _Pages:
    """What an episode holds of its pages.

    A search turn sends the page's model view, which the searcher keeps per page
    (`Searcher.model_view`, search_engine/model_views.py): no decode, no resize. A crop needs the
    full-resolution page: on the first crop of it, the page is decoded down to the crop's bottom
    row (`Searcher.page_top`, agent/page_decode.py: the same pixels as a full decode) and kept, as
    the reference keeps its raw image. A later crop inside those rows decodes nothing; one reaching
    lower decodes the whole page, so a run of crops decodes a page at most twice. At most one
    decoded page is held (the previous one is let go before the next is decoded), and none once
    the episode ends (`release`).
    """

    def __init__(self, searcher: Searcher):
        self.searcher = searcher
        self.page_id: str | None = None
        self.top: PageTop | None = None  # the decoded rows of page `page_id`
        self.raw_sizes: dict[str, tuple[int, int]] = {}  # of each page shown: what its crops expect
        self.released = False

    def view(self, page_id: str) -> ModelView:
        model_view = getattr(self.searcher, "model_view", None)
        if model_view is None:  # a searcher that keeps no views: make it from the page (and keep that)
            view = make_view(self.raw(page_id))
        else:
            view = model_view(page_id)
        self.raw_sizes[page_id] = view.raw_size
        return view

    def crop(self, page_id: str, region: protocol.Box) -> Image.Image:
        """The page's pixels in `region` (page pixels), from the decoded page kept for this episode."""
        box = protocol.pil_crop_box(region)
        held = self.top if page_id == self.page_id else None
        if held is None or held.image.height < box[3]:
            held = self._decode(page_id, rows=None if held is not None else box[3])
        return protocol.crop_page(held.image, region)

    def _decode(self, page_id: str, rows: int | None) -> PageTop:
        self.top = self.page_id = None
        top = decoded_top(self.searcher, page_id, rows)
        shown = self.raw_sizes.get(page_id)
        if shown is not None and tuple(top.size) != tuple(shown):
            raise SearchError(f"page {page_id} changed since it was shown: it is {top.size[0]}x{top.size[1]} "
                              f"now, {shown[0]}x{shown[1]} then (re-ingested during the episode?)")
        if not self.released:  # a crop abandoned at the deadline may finish after the episode
            self.top, self.page_id = top, page_id
        return top

    def raw(self, page_id: str) -> Image.Image:
        """The whole decoded page (a searcher without model views makes a page's view from it)."""
        held = self.top if page_id == self.page_id else None
        if held is None or not held.complete:
            held = self._decode(page_id, rows=None)
        return held.image

    def release(self) -> None:
        self.top = self.page_id = None
        self.released = True


def _show(images: dict[str, bytes], turn: Turn, jpeg: bytes, sent_size: tuple[int, int], view: ImageView) -> None:
    if tuple(sent_size) != tuple(view.input_size):  # the view must describe exactly what was sent
        raise AssertionError(f"sent {tuple(sent_size)} but recorded {view.input_size}")
    images[view.file] = jpeg
    turn.observation = view


def _do_search(images: dict[str, bytes], turn: Turn, shown: set[str], searcher: Searcher, pages: _Pages, top_k: int) -> None:
    hits = searcher.search(turn.argument, top_k)
    turn.hits = [h.to_dict() for h in hits]
    hit = next((h for h in hits if h.page_id not in shown), None)
    if hit is None:
        turn.feedback = ALL_PAGES_SHOWN if hits else NO_PAGES_FOUND
        return
    page = pages.view(hit.page_id)
    view = protocol.page_view(f"turn{turn.index:02d}-page.jpg", hit.page_id, hit.image_file, page.raw_size)
    turn.shown_page_id = hit.page_id
    _show(images, turn, page.jpeg, page.input_size, view)


def last_page_view(trajectory: Trajectory) -> ImageView | None:
    """The last page a search showed (what the training loop's crop cuts from)."""
    for turn in reversed(trajectory.turns):
        if turn.shown_page_id and turn.observation is not None:
            return turn.observation
    return None


def _do_bbox(images: dict[str, bytes], turn: Turn, parsed: ParsedReply, acted_on: ImageView, last_page: ImageView | None,
             pages: _Pages, crop_rule: str) -> str | None:
    """Crop and show; returns why the crop failed (the training rule only), else None."""
    if crop_rule == "training":
        page = last_page
        region = protocol.training_crop_box(list(parsed.bbox), acted_on.input_size, page.raw_size)
        if region is None:
            return f"{parsed.argument} leaves nothing to crop from the {page.raw_size[0]}x{page.raw_size[1]} page"
    else:
        page, region = acted_on, protocol.crop_region(acted_on, list(parsed.bbox))
    resized, jpeg = protocol.prepare_image(pages.crop(page.page_id, region))
    turn.bbox_model, turn.bbox_page, turn.acted_on = list(parsed.bbox), region, acted_on
    _show(images, turn, jpeg, resized.size, protocol.region_view(f"turn{turn.index:02d}-crop.jpg", page, region))
    return None


def _carry_out(turn: Turn, parsed: ParsedReply, trajectory: Trajectory, acted_on: ImageView | None, searcher: Searcher,
               pages: _Pages, top_k: int, profile: ProtocolProfile) -> tuple[Turn, dict[str, bytes], SearchError | None]:
    """A valid search or bbox, done on a copy of `turn`: (the turn as far as it got, the JPEGs it showed,
    the search failure that stopped it, if any; e.g. hits found but the page image not fetched).
    A bbox the profile's crop rule cannot cut comes back as an invalid turn with the profile's feedback.

    Nothing the episode holds is changed, so a call abandoned at the episode's deadline leaves no trace.
    """
    turn, images = replace(turn), {}
    try:
        if parsed.action == "search":
            _do_search(images, turn, set(trajectory.retrieved_pages), searcher, pages, top_k)
        elif (failed := _do_bbox(images, turn, parsed, acted_on, last_page_view(trajectory), pages, profile.crop)) is not None:
            turn.action, turn.error = "invalid", f"bbox cannot be cropped: {failed}"
            turn.feedback = feedback_message(profile.feedback, "bbox_crop_failed", failed)
    except SearchError as e:  # (a QueryRejected is not one: it goes to the caller, who tells the model)
        return turn, {}, e
    return turn, images, None


def _within(deadline: Deadline, call: Callable[[], T], name: str) -> T:
    """`call()`, within what is left of the episode's time (DeadlinePassed if not); direct without a limit."""
    remaining = deadline.remaining()
    if remaining is None:
        return call()
    return run_before(lambda _cancelled: call(), remaining, name=name)


def _fail(trajectory: Trajectory, message: str, cli_hint: str | None = None, app_hint: str | None = None) -> None:
    trajectory.error = message
    trajectory.error_hints = {k: v for k, v in (("cli", cli_hint), ("app", app_hint)) if v}
    log.info("episode %s ended: %s", trajectory.id, message)


def _out_of_time(trajectory: Trajectory, config: AgentConfig, during: str, kept: int) -> None:
    _fail(trajectory, f"the episode did not finish within its {config.episode_timeout:g} s limit ({during}; {kept} turns kept)",
          cli_hint="raise --episode-timeout, or lower --max-turns", app_hint="allow the run more time, or lower the turn budget")


def run_episode(trajectory: Trajectory, policy: Policy, searcher: Searcher, config: AgentConfig) -> Iterator[Turn]:
    """Run the episode, appending each Turn to `trajectory.turns` and yielding it when complete.

    Images sent to the model are kept in `trajectory.images` (JPEG bytes) until the trajectory is
    saved. The trajectory is complete when the generator is exhausted.
    """
    trajectory.config = {**trajectory.config, **config.to_dict()}
    if not trajectory.policy:
        trajectory.policy = policy.describe()
    profile = protocol.profile(config.protocol)
    pages = _Pages(searcher)
    try:
        yield from _turns(trajectory, policy, searcher, config, profile, pages)
    finally:  # finished, failed, or closed by its consumer: the decoded page goes with the episode
        pages.release()


def _turns(trajectory: Trajectory, policy: Policy, searcher: Searcher, config: AgentConfig, profile: ProtocolProfile,
           pages: _Pages) -> Iterator[Turn]:
    deadline = Deadline(config.episode_timeout)
    while len(trajectory.turns) < config.max_turns and not trajectory.finished:
        index = len(trajectory.turns)
        if deadline.passed:
            _out_of_time(trajectory, config, f"before turn {index + 1}", index)
            return
        messages = build_messages(trajectory, trajectory.images.__getitem__)
        started = time.perf_counter()
        try:
            completion = _within(deadline, lambda: policy.complete(messages), "policy-call")
        except PolicyError as e:
            _fail(trajectory, str(e), e.cli_hint, e.app_hint)
            return
        except DeadlinePassed:
            _out_of_time(trajectory, config, f"the model was still answering turn {index + 1}", index)
            return
        model_seconds = time.perf_counter() - started
        text = completion.text if isinstance(completion.text, str) else ""
        acted_on = last_view(trajectory)
        parsed = read_reply(text, profile.replies, acted_on.input_size if acted_on else None)
        turn = Turn(
            index=index,
            raw_text=text,
            action=parsed.action if parsed.valid else "invalid",
            argument=parsed.argument,
            thought=parsed.thought,
            model_seconds=model_seconds,
            prompt_tokens=completion.prompt_tokens,
            completion_tokens=completion.completion_tokens,
        )
        started = time.perf_counter()
        try:
            if not parsed.valid:
                turn.error, turn.feedback = parsed.error, feedback_message(profile.feedback, parsed.error_code, parsed.detail)
            elif parsed.action == "answer":
                trajectory.answer, trajectory.finished = parsed.argument, True
            else:
                turn, images, failure = _within(deadline, lambda: _carry_out(turn, parsed, trajectory, acted_on, searcher, pages,
                                                                          config.top_k, profile), f"{parsed.action}-call")
                trajectory.images.update(images)
                if failure is not None:
                    _fail(trajectory, str(failure))
        except QueryRejected as e:  # the model's query, refused by the engine: tell the model
            turn.action, turn.error, turn.feedback = "invalid", f"search refused: {e}", feedback_message(profile.feedback, "bad_query", str(e))
        except DeadlinePassed:  # the model's reply is kept; what it asked for was not done
            turn.error = f"the {parsed.action} was not carried out: the episode's time ran out"
            _out_of_time(trajectory, config, f"turn {index + 1}'s {parsed.action} was still running", index + 1)
        turn.tool_seconds = time.perf_counter() - started
        if not trajectory.finished and trajectory.error is None and index == config.max_turns - 2:
            turn.feedback = _join(turn.feedback, FINAL_TURN_NUDGE)
        trajectory.turns.append(turn)
        yield turn
        if trajectory.error is not None:
            return
    if not trajectory.finished:
        trajectory.answer = NO_ANSWER


def run_to_end(trajectory: Trajectory, policy: Policy, searcher: Searcher, config: AgentConfig) -> Trajectory:
    """Run the whole episode without streaming; returns the finished trajectory."""
    for _ in run_episode(trajectory, policy, searcher, config):
        pass
    return trajectory
