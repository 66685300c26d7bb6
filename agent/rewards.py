"""Rewards and answer scores as in the VRAG-RL paper and its released code.

- retrieval: NDCG of the pages shown in the episode, in order, binary relevance (gold page or not):
  DCG = sum_i (2^rel_i - 1) / log2(i + 1) over 1-based ranks i; IDCG is the DCG of a ranking that
  puts all gold pages first (every gold page counts, retrieved or not, so missing one costs).
- format ("pattern"): the released check passes when the episode searched at least once and
  ended with an <answer>.
- answer: exact match after normalisation, ANLS, or an LLM judge asked for
  `<judge>True or False</judge>` through any Policy (e.g. the same OpenAI-compatible client).
- combined: paper r = alpha*r_ret + beta*r_ans + gamma*r_pat; the released code uses
  0.7*answer + 0.1*format + 0.2*ndcg and gives it only when the format check passes.
"""
from __future__ import annotations

import math
import re
import string
import unicodedata
from dataclasses import asdict, dataclass

from agent.policies.base import Policy
from agent.prompts import JUDGE_PROMPT
from agent.protocol import text_part
from agent.trajectory import Trajectory

# --- retrieval ----------------------------------------------------------------------------


def dcg(relevances: list[float]) -> float:
    return sum((2**rel - 1) / math.log2(i + 1) for i, rel in enumerate(relevances, start=1))


def ndcg(retrieved: list[str], gold: list[str]) -> float:
    """NDCG of `retrieved` page ids (in order) against the gold page ids; 0.0 when there is no gold.

    A page retrieved twice counts once (at its first rank), as each page is shown once per episode.
    """
    gold_set = set(gold)
    if not gold_set:
        return 0.0
    seen: set[str] = set()
    rels = []
    for page in retrieved:
        rels.append(1.0 if page in gold_set and page not in seen else 0.0)
        seen.add(page)
    return dcg(rels) / dcg([1.0] * len(gold_set))


def recall_at(hits: list[str], gold: list[str], k: int) -> float:
    """Share of the gold pages among the first k hits (0.0 when there is no gold)."""
    gold_set = set(gold)
    return len(gold_set & set(hits[:k])) / len(gold_set) if gold_set else 0.0


# --- format -------------------------------------------------------------------------------


def format_ok(trajectory: Trajectory) -> bool:
    """The released format check: at least one search and a final answer."""
    return trajectory.finished and any(t.action == "search" for t in trajectory.turns)


# --- answers ------------------------------------------------------------------------------


def normalize_answer(text: str) -> str:
    """Lower case, drop punctuation (ASCII and Unicode, e.g. Chinese), English articles and extra spaces."""
    text = unicodedata.normalize("NFKC", text or "").lower()
    text = "".join(" " if (ch in string.punctuation or unicodedata.category(ch).startswith("P")) else ch for ch in text)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def exact_match(prediction: str, references: str | list[str]) -> float:
    refs = [references] if isinstance(references, str) else references
    pred = normalize_answer(prediction)
    return 1.0 if any(pred == normalize_answer(r) for r in refs) else 0.0


def levenshtein(a: str, b: str) -> int:
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        current = [i]
        for j, cb in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def anls(prediction: str, references: str | list[str], threshold: float = 0.5) -> float:
    """Average Normalised Levenshtein Similarity (DocVQA): best over references of 1 - NL, 0 if NL >= threshold.

    Strings are compared lower-cased with surrounding and repeated spaces removed.
    """
    refs = [references] if isinstance(references, str) else references
    pred = " ".join((prediction or "").lower().split())
    best = 0.0
    for ref in refs:
        ref = " ".join(ref.lower().split())
        if not pred and not ref:
            return 1.0
        nl = levenshtein(pred, ref) / max(len(pred), len(ref))
        best = max(best, 0.0 if nl >= threshold else 1.0 - nl)
    return best


_JUDGE_RE = re.compile(r"<judge>\s*(true|false)\s*</judge>", re.IGNORECASE)


class LLMJudge:
    """Asks a chat model whether an answer matches the reference; `policy` is any Policy
    (e.g. `make_policy("vllm", base_url=..., model=...)`). Returns None if the verdict is unreadable."""

    def __init__(self, policy: Policy):
        self.policy = policy

    def __call__(self, question: str, reference: str, prediction: str) -> bool | None:
        text = JUDGE_PROMPT.format(question=question, reference=reference, prediction=prediction)
        reply = self.policy.complete([{"role": "user", "content": [text_part(text)]}]).text
        m = _JUDGE_RE.search(reply or "")
        return None if m is None else m.group(1).lower() == "true"


# --- combined -----------------------------------------------------------------------------


@dataclass(frozen=True)
class RewardWeights:
    answer: float = 0.7  # beta in the paper
    format: float = 0.1  # gamma
    retrieval: float = 0.2  # alpha
    gate_on_format: bool = True  # released code: reward only when the format check passes

    def to_dict(self) -> dict:
        return asdict(self)


RELEASED_WEIGHTS = RewardWeights()


def combined_reward(answer_score: float, format_passed: bool, ndcg_score: float, weights: RewardWeights = RELEASED_WEIGHTS) -> float:
    if weights.gate_on_format and not format_passed:
        return 0.0
    return weights.answer * answer_score + weights.format * float(format_passed) + weights.retrieval * ndcg_score


def score_trajectory(trajectory: Trajectory, judge: LLMJudge | None = None, weights: RewardWeights = RELEASED_WEIGHTS) -> dict[str, float]:
    """All rewards of a finished trajectory against `trajectory.gold` ({"answer", "pages"}).

    The answer score in the combined reward is the judge's verdict when a judge is given (as in
    training), else exact match. Keys: ndcg, format, exact_match, anls, [judge], answer, reward.
    """
    gold_answers = trajectory.gold.get("answers") or ([trajectory.gold["answer"]] if trajectory.gold.get("answer") else [])
    prediction = trajectory.answer if trajectory.finished else ""
    scores = {
        "ndcg": ndcg(trajectory.retrieved_pages, trajectory.gold.get("pages", [])),
        "format": float(format_ok(trajectory)),
        "exact_match": exact_match(prediction, gold_answers) if gold_answers else 0.0,
        "anls": anls(prediction, gold_answers) if gold_answers else 0.0,
    }
    answer = scores["exact_match"]
    if judge is not None and gold_answers and trajectory.finished:
        verdict = judge(trajectory.question, gold_answers[0], prediction)
        scores["judge"] = float(bool(verdict))
        answer = scores["judge"]
    scores["answer"] = answer
    scores["reward"] = combined_reward(answer, bool(scores["format"]), scores["ndcg"], weights)
    return scores
