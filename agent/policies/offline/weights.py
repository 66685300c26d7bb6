"""Every weight of the offline policy's scoring, in one place.

A candidate's score is its support (how strongly the lines holding question terms vouch for it, see
scoring.py) times one factor per feature that fires on it. The fields below are those factors,
named as the policy's thoughts name them: a factor over 1 favours a candidate, under 1 disfavours
it, and 1 switches the feature off (0 for the two `_per_word` rates). Support strengths are
multiplied the same way by the fields of the first group. Hand-set, not learned: tuned on the dev
split and the offline tuning set only.
"""
from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True)
class Weights:
    # --- how a line holding a question term supports a candidate (multiplies its strength)
    label_on_same_line: float = 0.5  # a short line holding the term and the number ("Top 20 destinations")
    note_of_another_word: float = 0.4  # "Okinawa (#7), Kyoto (#12)": a bracketed number belongs to the word before it
    mentioned_in_title: float = 0.5  # a big-type line mentions things in passing
    big_type_label: float = 0.5  # a big-type line labels the whole slide, not one cell
    label_right_of_value: float = 0.8  # row labels sit left of their values
    row_label_above_or_below: float = 0.3  # a table's row label names its row, not the cells above and below it
    rank_in_between: float = 0.3  # a rank labels the phrase right after it, not the one after the next rank
    sibling_label: float = 0.5  # parallel labels sharing words ("IT系统上云", "全量系统上云"), not label and value
    sibling_bullet: float = 0.4  # two bullet points of one list: neither labels the other
    right_under_its_label: float = 1.15  # a phrase right under or beside its label describes it
    # --- features of a number
    far_from_named_number: float = 0.5  # the question names a number (a year) and this is far from it
    full_date: float = 1.2  # a full date says more than the bare year inside it
    completes_question: float = 2.0  # the number the question's own words lead into ("降至9.8%" for "降到了多少")
    change_starts_from: float = 0.5  # "up from EUR 1.98": the old value a change starts from
    inside_a_label: float = 0.7  # a number inside a label or an unrelated sentence, not a value standing alone
    # --- features of a text phrase
    slide_title: float = 0.3  # a slide title is the topic, rarely the answer
    echoes_question: float = 0.2  # made wholly of the question's own words (graded: from a quarter of them)
    long_phrase_per_word: float = 0.3  # an answer is short: divides by 1 + this per word over 5
    has_asked_shape: float = 1.5  # a name for "who", a domain for "which website"
    lacks_asked_shape: float = 0.6
    heads_its_column: float = 1.5  # "which stage": a stage's name heads the column of what the question says
    not_a_heading: float = 0.7
    at_named_rank: float = 1.3  # "3 Rome-Italy" for "which destination ranks 3rd"
    completes_question_text: float = 1.5  # the page completes the question's own Chinese sentence
    # --- phrases read from sentences (prose.py): sqrt(question weight beside it) x (0.5 + share restated)
    from_a_sentence: float = 1.3
    long_sentence_phrase_per_word: float = 0.1  # divides by 1 + this per word over 8
    restates_the_rest: float = 1.5  # "DOMESTIC TRAVEL IS THE SHORT-TERM GROWTH ENGINE" for "what is the ... engine"
    claim_in_title: float = 0.6  # a slide title's claim answers only when the body says nothing

    def off(self, *names: str) -> "Weights":
        """These weights with the named features switched off (for ablations)."""
        unknown = set(names) - {f.name for f in fields(self)}
        if unknown:
            raise ValueError(f"no such weights: {', '.join(sorted(unknown))}")
        neutral = {f.name: 0.0 if f.name.endswith("_per_word") else 1.0 for f in fields(self)}
        return Weights(**{f.name: neutral[f.name] if f.name in names else getattr(self, f.name) for f in fields(self)})
