"""The offline policy (OCR + keyword rules, no model): its pure rules on hand-made OCR boxes, its
reading of the conversation, and whole episodes through the real loop over the real demo index."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from agent import protocol
from agent.loop import AgentConfig, new_trajectory, run_episode
from agent.parsing import check_action, parse_reply
from agent.policies import make_policy
from agent.policies.base import PolicyError
from agent.policies.offline import DESCRIPTION, HONEST_PREFIX, OfflinePolicy
from agent.policies.offline.conversation import read_conversation
from agent.policies.offline.crop import answer_on_crop, choose_region
from agent.policies.offline.layout import relation
from agent.policies.offline.page import Page
from agent.policies.offline.prose import blocks_of
from agent.policies.offline.question import Question, analyse_question
from agent.policies.offline.readers import best_answer
from agent.policies.offline.readers.bar_lengths import bar_ends, label_column, swatch_color
from agent.policies.offline.readers.document import cover_likeness
from agent.policies.offline.readers.printed_values import labelled_values
from agent.policies.offline.scoring import Candidate, rank_candidates
from agent.policies.offline.spans import Span, spans_of
from agent.policies.offline.terms import ALIASES, fuzzy_equal, terms_of
from agent.policies.offline.weights import Weights
from agent.prompts import FINAL_TURN_NUDGE, render_prompt
from agent.search import LocalSearcher
from search_engine.types import TextBox

SIZE = (800, 600)


def tb(text: str, x1: float, y1: float, x2: float, y2: float) -> TextBox:
    return TextBox(text, (x1, y1, x2, y2))


def page_of(boxes: list[TextBox], question: str | Question, size=SIZE, pixels=None) -> Page:
    return Page(boxes, size, analyse_question(question) if isinstance(question, str) else question, pixels)


def best(boxes, question, size=SIZE, pixels=None) -> Candidate | None:
    """The policy's answer on one image of these OCR lines, with the default weights."""
    return best_answer(page_of(boxes, question, size, pixels), Weights())


def region(boxes, question, size=SIZE, pixels=None):
    return choose_region(page_of(boxes, question, size, pixels), Weights())


def ranked(boxes, question, size=SIZE) -> list[Candidate]:
    return rank_candidates(page_of(boxes, question, size), Weights())


def picked(text: str, reader: str = "") -> Candidate:
    """A page's pick, as the policy hands it to the crop that follows."""
    return Candidate(Span(text, "text", (0, 0, 1, 1), 0), 1.0, reader=reader)


def inside(inner, outer, slack: float = 0.0) -> bool:
    return (inner[0] >= outer[0] - slack and inner[1] >= outer[1] - slack
            and inner[2] <= outer[2] + slack and inner[3] <= outer[3] + slack)


# --- question analysis ---------------------------------------------------------------------------


@pytest.mark.parametrize("question, kind", [
    ("How many outbound trips did Japan make in 2014?", "number"),
    ("What is the CAGR of India's outbound trips?", "percent"),
    ("What share of households earn over US$10,000?", "percent"),
    ("In which year did VPC start supporting IPv6?", "year"),
    ("When was the VPC launched?", "date"),
    ("On what date was the memo signed?", "date"),
    ("水厂是什么时候投入使用的？", "date"),
    ("What water tariff did the board approve for 2026?", "value"),
    ("水务局的管网漏损率降到了多少？", "percent"),
    ("Which country has the highest CAGR?", "text"),
    ("Who is the author of the presentation?", "text"),
    ("What is the top aspirational destination among Japanese travellers?", "text"),
    ("What is Japan's uncertainty avoidance score?", "value"),
    ("Where does Japan rank among Indian travellers' destinations?", "rank"),  # answered by a number (scoring.KINDS_FOR)
    ("What is Kyoto's rank among domestic destinations?", "rank"),
    ("Which destination ranks 3rd?", "text"),
    ("What are the key barriers to mobile bookings?", "text"),
    ("What is the credit card penetration in Singapore?", "value"),
    ("Between which years did tourism grow five times?", "year"),
    ("阿里云的VPC是哪一年诞生的？", "year"),
    ("增强型NAT网关有什么特点？", "text"),
    ("数据中心有多少个？", "number"),
    ("云网络的占比是多少？", "percent"),
])
def test_answer_kind_follows_the_wording(question, kind):
    assert analyse_question(question).kind == kind


def test_terms_drop_question_words_and_normalise_ranks_plurals_and_possessives():
    q = analyse_question("How many outbound trips did Japan's travellers make in 2014?")
    assert {"outbound", "trip", "japan", "traveller", "2014"} <= set(q.terms)
    assert not {"how", "many", "did", "make"} & set(q.terms)
    assert q.numbers == ("2014",)
    assert q.terms["2014"] > q.terms["trip"]  # numbers are sharp anchors
    assert "3" in analyse_question("Which destination ranks 3rd?").terms
    assert "1" in analyse_question("What is the top destination?").terms
    assert "1" not in analyse_question("What share do top destinations get?").terms  # "top 20" style, not rank 1
    assert "3" in analyse_question("目录中的第三部分讲的是什么？").terms
    assert terms_of("03典型用户案例介绍")[0] == "3"  # a numbered section is its rank


def test_chinese_questions_use_bigrams_and_a_cloze_prefix():
    q = analyse_question("目录第二部分的产品发布围绕哪几个方面？")
    assert q.language == "zh"
    assert {"目录", "产品", "发布", "围绕"} <= set(q.terms)
    assert "产" not in q.terms and "的产" not in q.terms  # single characters and pairs across 的 are noise
    assert q.cloze == "围绕"
    assert "哪几" not in q.query and "目录" in q.query


def test_query_keeps_the_content_words_in_order_and_aliases_cover_chart_codes():
    q = analyse_question("What is the credit card penetration in Singapore?")
    assert q.query == "credit card penetration Singapore"
    assert ALIASES["singapore"] == ("sg",)
    assert page_of([tb("SG", 0, 0, 10, 10)], q).match > 0


# --- spans and geometry --------------------------------------------------------------------------


def test_spans_cut_numbers_with_their_kinds_and_phrases_without_rank_marks():
    boxes = [tb("Total - 14 markets 7.9%", 0, 0, 230, 20), tb("CAGR (2014-20)", 0, 30, 140, 50),
             tb("1 Paris-France", 0, 60, 140, 80), tb("Increase 3rd party payment +891%", 0, 90, 320, 110),
             tb("2019", 0, 120, 40, 140), tb("US$10,000", 0, 150, 90, 170)]
    spans = spans_of(boxes)
    numbers = [(s.text, s.kind) for s in spans if s.kind != "text"]
    # no numbers from the range "2014-20" or the ordinal "3rd"; a rank ("1 Paris-France") is a number too
    assert numbers == [("14", "number"), ("7.9%", "percent"), ("1", "number"), ("+891%", "percent"), ("2019", "year"),
                       ("US$10,000", "number")]
    texts = {s.text for s in spans if s.kind == "text"}
    assert "Paris-France" in texts and "CAGR (2014-20)" not in texts  # mostly digits: not a phrase
    pct = next(s for s in spans if s.text == "7.9%")
    assert 180 < pct.box[0] < pct.box[2] <= 230  # the sub-box sits at the end of its line


@pytest.mark.parametrize("line", ["Table 1. Water delivered by district", "see Figure 12 below", "Page 2", "图 3 网络架构"])
def test_a_number_naming_a_table_figure_or_page_is_not_a_value(line):
    assert [s.text for s in spans_of([tb(line, 0, 0, 300, 20)]) if s.kind != "text"] == []


def test_numbers_beside_such_words_elsewhere_still_count():
    assert [s.text for s in spans_of([tb("Stable 4 of 2014 pages", 0, 0, 300, 20)]) if s.kind != "text"] == ["4", "2014"]


def test_relation_tells_rows_columns_and_nearness_apart():
    cell = (400, 150, 440, 170)
    assert relation(cell, (50, 150, 120, 170), SIZE)[1] == "row"
    assert relation(cell, (400, 100, 450, 120), SIZE)[1] == "column"
    strength, how = relation(cell, (480, 200, 520, 215), SIZE)
    assert how == "near" and 0 < strength < 0.4
    far_row, _ = relation(cell, (700, 150, 780, 170), SIZE)
    assert relation(cell, (450, 150, 500, 170), SIZE)[0] > far_row  # rows fade with the gap


# --- choosing answers from boxes -----------------------------------------------------------------

TABLE = [
    tb("Outbound trips by country", 50, 40, 500, 70),
    tb("Country", 50, 100, 150, 120), tb("2013", 300, 100, 350, 120), tb("2014", 400, 100, 450, 120), tb("CAGR", 500, 100, 560, 120),
    tb("Japan", 50, 150, 110, 170), tb("17.1", 305, 150, 345, 170), tb("7.9", 410, 150, 440, 170), tb("1.1%", 505, 150, 555, 170),
    tb("India", 50, 180, 105, 200), tb("7.2", 310, 180, 340, 200), tb("10.9", 405, 180, 445, 200), tb("13.0%", 500, 180, 560, 200),
    tb("China", 50, 210, 110, 230), tb("61.1", 305, 210, 345, 230), tb("71.2", 405, 210, 445, 230), tb("11.1%", 500, 210, 560, 230),
]


@pytest.mark.parametrize("question, answer", [
    ("How many outbound trips did Japan make in 2014?", "7.9"),
    ("What is the CAGR of India's outbound trips?", "13.0%"),
    ("How many trips did China make in 2013?", "61.1"),
    ("Which country has the highest CAGR?", "India"),
    ("Which country has the lowest CAGR?", "Japan"),
])
def test_table_questions_pick_the_cell_at_the_named_row_and_column(question, answer):
    assert best(TABLE, question, SIZE).span.text == answer


def test_region_holds_the_cell_its_row_label_and_its_column_header():
    cand, box = region(TABLE, "How many outbound trips did Japan make in 2014?")
    assert cand.span.text == "7.9"
    for cell in [(410, 150, 440, 170), (50, 150, 110, 170), (400, 100, 450, 120)]:
        assert inside(cell, box)
    assert inside(box, (0, 0, *SIZE))
    assert "Japan" in cand.explain() and "2014" in cand.explain()


def test_bar_values_are_read_from_the_panel_the_question_names():
    boxes = [
        tb("Electronic payment", 50, 100, 250, 120), tb("42%", 80, 140, 110, 155), tb("13%", 180, 200, 210, 215),
        tb("SG", 85, 300, 105, 315), tb("MY", 185, 300, 205, 315),
        tb("Mobile payment", 350, 100, 550, 120), tb("17%", 380, 160, 410, 175), tb("22%", 480, 150, 510, 165),
        tb("SG", 385, 300, 405, 315), tb("MY", 485, 300, 505, 315),
    ]
    q = analyse_question("What percentage of SG respondents use mobile payment?")
    assert best(boxes, q, SIZE).span.text == "17%"
    q = analyse_question("What percentage of MY respondents use electronic payment?")
    assert best(boxes, q, SIZE).span.text == "13%"


def test_rank_questions_answer_the_phrase_on_the_ranked_line():
    boxes = [tb("Top destinations among Japanese travellers", 50, 40, 600, 70),
             tb("1 Paris-France", 400, 150, 560, 170), tb("2 NY-USA", 100, 180, 200, 200),
             tb("3 Rome-Italy", 400, 220, 540, 240), tb("4 Hawaii", 650, 260, 740, 280)]
    assert best(boxes, "Which destination ranks 3rd among Japanese travellers?", SIZE).span.text == "Rome-Italy"
    assert best(boxes, "What is the top destination among Japanese travellers?", SIZE).span.text == "Paris-France"


def test_chinese_timeline_year_sits_in_the_label_column():
    boxes = [tb("云上数据中心网络演进", 250, 40, 600, 80),
             tb("经典网络", 80, 160, 160, 180), tb("2009", 90, 280, 150, 300), tb("2014", 230, 240, 290, 260),
             tb("VPC诞生", 225, 330, 300, 350), tb("2017", 370, 280, 430, 300), tb("VPC对等连接发布", 330, 160, 470, 180)]
    assert best(boxes, "阿里云的VPC是哪一年诞生的？", SIZE).span.text == "2014"
    assert best(boxes, "VPC对等连接是哪一年发布的？", SIZE).span.text == "2017"


def test_chinese_cloze_cuts_the_answer_out_of_a_line():
    boxes = [tb("Contents", 50, 150, 200, 180), tb("目录", 50, 190, 120, 230),
             tb("01数据中心网络面临的挑战", 350, 140, 700, 170),
             tb("02围绕安全/稳定/性能/成本的产品重磅发布", 350, 230, 780, 260),
             tb("03典型用户案例介绍", 350, 320, 600, 350)]
    assert best(boxes, "目录第二部分的产品发布围绕哪几个方面？", SIZE).span.text == "安全/稳定/性能/成本"
    assert best(boxes, "目录中的第三部分讲的是什么？", SIZE).span.text == "典型用户案例介绍"


def test_who_questions_prefer_a_name_and_website_questions_a_domain():
    boxes = [tb("APAC ONLINE TRAVEL", 50, 150, 400, 190), tb("MARKET - QUEST FOR THE", 50, 200, 450, 240),
             tb("“SUPERCONSUMERS”", 50, 250, 400, 290), tb("SUSHANT SHARMA", 50, 320, 250, 340),
             tb("E: SUSHANT.MAILS@GMAIL.COM", 50, 350, 300, 365)]
    assert best(boxes, "Who is the author of the APAC online travel market deck?", SIZE).span.text == "SUSHANT SHARMA"
    boxes = [tb("Share travel", 300, 100, 400, 120), tb("experiences", 300, 122, 400, 140),
             tb("在路上", 300, 160, 360, 180), tb("117go.com", 300, 190, 380, 205)]
    assert best(boxes, "Which website helps travellers share travel experiences?", SIZE).span.text == "117go.com"


def test_a_question_for_three_items_lists_the_labels_stacked_in_a_column():
    boxes = [tb("Supply", 600, 100, 680, 125), tb("Inventory fulfillment", 520, 140, 700, 160),
             tb("and optimization", 550, 162, 700, 182),
             tb("Merchants", 606, 200, 688, 222), tb("Agencies", 616, 245, 688, 267), tb("Partners", 620, 290, 688, 312),
             tb("Strategy and Operations", 300, 140, 480, 160)]
    q = analyse_question("On the supply side, which three groups sit under inventory fulfillment and optimization?")
    assert q.count == 3 and "3" not in q.terms  # a count of items, not a number to look for
    assert best(boxes, q, SIZE).span.text == "Merchants, Agencies, Partners"


def test_no_candidate_of_the_asked_kind_gives_none():
    boxes = [tb("Japan", 50, 150, 110, 170), tb("Outbound travel", 50, 50, 300, 80)]
    assert best(boxes, "In which year did Japan's outbound travel peak?", SIZE) is None
    assert region([], "How many trips?") is None


def test_a_crop_keeps_the_pages_pick_when_it_still_reads_it():
    q = analyse_question("How many outbound trips did Japan make in 2014?")
    # the crop lost the header: on its own it would prefer another cell of the row
    crop = [tb("Japan", 10, 50, 80, 80), tb("17.1", 300, 50, 350, 80), tb("7.9", 420, 50, 460, 80)]
    own = best(crop, q, (600, 200)).span.text
    on_crop = page_of(crop, q, (600, 200))
    assert answer_on_crop(on_crop, Weights(), picked("7.9")).span.text == "7.9"
    assert answer_on_crop(on_crop, Weights(), None).span.text == own
    assert answer_on_crop(on_crop, Weights(), picked("999")).span.text == own  # not readable: the crop decides


def test_ranking_is_deterministic():
    q = analyse_question("How many outbound trips did Japan make in 2014?")
    first = [(c.span.text, round(c.score, 9)) for c in ranked(TABLE, q)]
    assert first == [(c.span.text, round(c.score, 9)) for c in ranked(list(TABLE), q)]


# --- prose ----------------------------------------------------------------------------------------

PROSE = [
    tb("Okinawa (#7), Kyoto (#12) and", 400, 300, 640, 318), tb("Hokkaido (#18) are the 3 top", 410, 320, 630, 338),
    tb("domestic aspirations destinations", 400, 340, 640, 358),
    tb("Declining and ageing population,", 400, 365, 640, 383), tb("stagnant economy, natural disasters", 395, 385, 645, 403),
    tb("abroad are the main cited reasons for", 390, 405, 650, 423), tb("low motivation for outbound travel", 400, 425, 640, 443),
    # a table column of one-word cells stacks the same way, but is not prose
    tb("Japan", 50, 300, 100, 318), tb("India", 50, 320, 100, 338), tb("China", 50, 340, 100, 358),
]


def test_blocks_join_wrapped_lines_into_sentences_and_leave_table_columns_out():
    blocks = blocks_of(PROSE, SIZE)
    assert [len(b.lines) for b in blocks] == [7]
    # a capital after a finished line starts a new sentence even without a full stop
    assert "destinations\nDeclining" in blocks[0].text
    assert "Kyoto (#12) and Hokkaido" in blocks[0].text


@pytest.mark.parametrize("question, answer", [
    ("Which three places are the top domestic aspirational destinations?", "Okinawa, Kyoto and Hokkaido"),
    ("What are the main cited reasons for low motivation for outbound travel?",
     "Declining and ageing population, stagnant economy, natural disasters abroad"),
])
def test_prose_answers_are_the_words_beside_the_question_s_words(question, answer):
    assert best(PROSE, question, SIZE).span.text == answer


def test_a_number_in_a_sentence_is_the_one_beside_its_term():
    assert best(PROSE, "What is Kyoto's rank among domestic aspiration destinations?", SIZE).span.text == "12"


TITLE = [  # a slide title set as a claim in capitals, over a body in a smaller font
    tb("INDIA - IN THE LONG-TERM OUTBOUND", 40, 10, 600, 40), tb("TRAVEL WILL FUEL THE GROWTH,", 40, 44, 560, 74),
    tb("HOWEVER, DOMESTIC TRAVEL IS THE", 40, 78, 590, 108), tb("SHORT-TERM GROWTH ENGINE", 40, 112, 520, 142),
    tb("Of the top 50 destinations, 21 are domestic", 40, 300, 400, 316),
]


def test_slide_titles_are_read_as_claims():
    q = analyse_question("What is the short-term growth engine for India's travel market?")
    assert q.kind == "text"  # the head noun is "engine", not a measure
    assert best(TITLE, q, SIZE).span.text == "DOMESTIC TRAVEL"


def test_abbreviations_do_not_end_a_sentence():
    boxes = [tb("CHINA, S. KOREA, JAPAN, INDIA AND MALAYSIA", 40, 10, 700, 40),
             tb("WILL POWER THE OUTBOUND TRAVEL MARKET", 40, 44, 660, 74), tb("IN APAC BY 2020", 40, 78, 300, 108),
             tb("Outbound Trips (Mn.)", 40, 130, 200, 146)]
    q = analyse_question("Which countries will power the outbound travel market in APAC by 2020?")
    assert best(boxes, q, SIZE).span.text == "CHINA, S. KOREA, JAPAN, INDIA AND MALAYSIA"


def test_headings_are_not_prose():
    boxes = [tb("Proportion of travellers over 65 years of age", 100, 100, 500, 120),
             tb("Japan", 50, 150, 100, 170), tb("Korea", 50, 180, 100, 200)]
    assert page_of(boxes, "Which country has the most travellers over 65?").phrases == []


def test_chinese_reason_clause_beside_the_clause_the_question_restates():
    # the bold label above is in a larger font, so it is not part of the paragraph
    boxes = [tb("VPC支持IPv6", 480, 428, 600, 452), tb("随着IPv4地址耗尽，VPC开", 460, 458, 620, 474),
             tb("始支持IPv6地址", 490, 476, 590, 492)]
    phrases = page_of(boxes, "VPC为什么开始支持IPv6地址？").phrases
    assert "随着IPv4地址耗尽" in [p.text for p in phrases]


# --- bar charts measured in pixels ---------------------------------------------------------------


def bar_chart(lengths: dict[str, tuple[int, int]]) -> tuple[np.ndarray, list[TextBox]]:
    """A horizontal grouped bar chart: per label a red (leisure) bar above a blue (business) bar,
    a title, and a legend whose swatch is a darker red than the bars (as in the demo slides)."""
    image = Image.new("RGB", SIZE, "white")
    draw = ImageDraw.Draw(image)
    boxes = [tb("Proportion of travellers over 65 by country", 100, 60, 600, 85)]
    for k, (label, (red, blue)) in enumerate(lengths.items()):
        y = 120 + 50 * k
        boxes.append(tb(label, 150 - 10 * len(label), y, 150, y + 16))
        draw.rectangle([152, y - 6, 152 + red, y + 6], fill=(200, 60, 60))
        draw.rectangle([152, y + 10, 152 + blue, y + 22], fill=(60, 90, 200))
        for x in range(152, 600, 60):  # grey grid lines are not bars
            draw.line([x, y - 10, x, y + 26], fill=(190, 190, 190))
    draw.rectangle([200, 470, 215, 485], fill=(126, 1, 1))
    boxes.append(tb("Leisure", 220, 470, 280, 486))
    draw.rectangle([320, 470, 335, 485], fill=(0, 0, 120))
    boxes.append(tb("Business", 340, 470, 410, 486))
    return np.asarray(image), boxes


def test_label_column_and_bar_ends_measure_each_series():
    pixels, boxes = bar_chart({"Singapore": (120, 40), "Japan": (300, 100), "India": (200, 380)})
    labels = label_column(boxes, 0, SIZE)
    assert [boxes[i].text for i in labels] == ["Singapore", "Japan", "India"]
    red = swatch_color(pixels, boxes[-2].box)
    ends = {boxes[label].text: end for label, end in bar_ends(pixels, boxes, labels, 640, red)}
    assert ends["Japan"] == pytest.approx(152 + 300, abs=2) and ends["India"] == pytest.approx(152 + 200, abs=2)
    any_colour = {boxes[label].text: end for label, end in bar_ends(pixels, boxes, labels, 640)}
    assert any_colour["India"] == pytest.approx(152 + 380, abs=2)


def test_extreme_question_over_a_bar_chart_measures_the_named_series():
    pixels, boxes = bar_chart({"Singapore": (120, 40), "Japan": (300, 100), "India": (200, 380)})
    q = analyse_question("Which country has the largest proportion of leisure travellers over 65?")
    cand = best(boxes, q, SIZE, pixels)
    assert cand.span.text == "Japan" and "longest" in cand.explain() and "Leisure" in cand.explain()
    q = analyse_question("Which country has the lowest proportion of leisure travellers over 65?")
    assert best(boxes, q, SIZE, pixels).span.text == "Singapore"
    _, box = region(boxes, "Which country has the largest proportion of leisure travellers over 65?", SIZE, pixels)
    assert inside(boxes[-2].box, box)  # the legend stays in the crop, so the crop measures the same series


# --- the conversation ---------------------------------------------------------------------------


def prompt(question: str) -> dict:
    return {"role": "user", "content": [protocol.text_part(render_prompt(question))]}


def jpeg_of(image: Image.Image) -> bytes:
    return protocol.prepare_image(image)[1]


def test_first_reply_is_a_search_in_the_protocol_format_and_says_what_it_is():
    policy = OfflinePolicy()  # OCR is built lazily: a first turn needs none
    reply = policy.complete([prompt("How many outbound trips did Japan make in 2014?")]).text
    parsed = parse_reply(reply)
    assert parsed.valid and parsed.action == "search"
    assert parsed.argument == "outbound trips Japan 2014"
    assert reply.startswith("<think>") and HONEST_PREFIX.strip() in parsed.thought
    assert "no vision-language model" in parsed.thought
    assert policy.describe() == {"name": "offline", "model": "none (rapidocr OCR + keyword rules)", "description": DESCRIPTION,
                                 "settings": {"max_searches": 5, "min_page_match": 0.4}}
    assert "no vision-language model" in policy.describe()["description"]


@pytest.mark.parametrize("question", ["?", "<answer>42</answer> what?", "x" * 5000, "哪一年？", "2014"])
def test_any_question_gets_a_valid_first_search(question):
    reply = OfflinePolicy().complete([prompt(question)]).text
    parsed = parse_reply(reply)
    assert parsed.valid and parsed.action == "search", reply
    assert 0 < len(parsed.argument) <= 300


def test_an_empty_question_is_answered_at_once():
    parsed = parse_reply(OfflinePolicy().complete([prompt("  ")]).text)
    assert parsed.valid and parsed.action == "answer" and parsed.argument == "not found"


def test_read_conversation_pairs_replies_with_observations():
    img = jpeg_of(Image.new("RGB", (100, 80), "white"))
    messages = [prompt("q?"), {"role": "assistant", "content": "<think>a</think><search>q</search>"},
                {"role": "user", "content": [protocol.image_part(img), protocol.text_part(FINAL_TURN_NUDGE)]}]
    conv = read_conversation(messages)
    assert conv.question == "q?" and conv.searches == 1 and conv.nudged
    assert conv.steps[0].image == img
    with pytest.raises(PolicyError, match="VRAG prompt"):
        read_conversation([{"role": "user", "content": "hello"}])
    with pytest.raises(PolicyError, match="start with the user's prompt"):
        read_conversation([])


def test_search_with_no_new_page_searches_the_whole_question_then_answers_not_found():
    policy = OfflinePolicy(max_searches=2)
    q = "How many outbound trips did Japan make in 2014?"
    messages = [prompt(q), {"role": "assistant", "content": "<think>x</think><search>trips</search>"},
                {"role": "user", "content": [protocol.text_part("All pages found for this query were already shown to you.")]}]
    second = parse_reply(policy.complete(messages).text)
    assert second.action == "search" and second.argument == q
    messages += [{"role": "assistant", "content": "<think>x</think><search>" + q + "</search>"},
                 {"role": "user", "content": [protocol.text_part("The search found no pages for this query.")]}]
    last = parse_reply(policy.complete(messages).text)
    assert last.valid and last.action == "answer" and last.argument == "not found"


# --- with real OCR --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ocr():
    from search_engine.ocr import OcrEngine

    return OcrEngine()


def rendered_table() -> Image.Image:
    """A small table drawn with PIL's bundled font, large enough for OCR."""
    image = Image.new("RGB", (900, 500), "white")
    draw = ImageDraw.Draw(image)
    font = __import__("PIL.ImageFont", fromlist=["ImageFont"]).load_default(size=32)
    rows = [("Country", "2013", "2014"), ("Japan", "17.1", "7.9"), ("India", "7.2", "10.9")]
    for r, row in enumerate(rows):
        for c, cell in enumerate(row):
            draw.text((60 + 300 * c, 80 + 110 * r), cell, fill="black", font=font)
    return image


@pytest.mark.slow  # OCR of real pages
def test_page_then_crop_then_answer_on_a_real_image(ocr):
    policy = OfflinePolicy(ocr=ocr)
    q = "How many trips did Japan make in 2014?"
    page, jpeg = protocol.prepare_image(rendered_table())
    messages = [prompt(q), {"role": "assistant", "content": "<think>x</think><search>Japan 2014</search>"},
                {"role": "user", "content": [protocol.image_part(jpeg)]}]
    reply = policy.complete(messages).text
    parsed = check_action(parse_reply(reply), page.size)
    assert parsed.valid and parsed.action == "bbox", reply
    x1, y1, x2, y2 = parsed.bbox
    # the "7.9" cell (row 2, column 3 of the drawing), mapped to model pixels, is inside the box
    sx, sy = page.size[0] / 900, page.size[1] / 500
    assert x1 <= 660 * sx and x2 >= 700 * sx and y1 <= 190 * sy and y2 >= 220 * sy
    crop = rendered_table().crop(protocol.pil_crop_box(protocol.crop_box(list(parsed.bbox), page.size, (900, 500))))
    messages += [{"role": "assistant", "content": reply}, {"role": "user", "content": [protocol.image_part(jpeg_of(crop))]}]
    # the page lacks "trips": before answering, it looks at the next search result once
    reply = policy.complete(messages).text
    peek = parse_reply(reply)
    assert peek.action == "search" and "checking the next search result" in peek.thought and '"7.9"' in peek.thought
    other = Image.new("RGB", (900, 500), "white")
    ImageDraw.Draw(other).text((60, 80), "Hotel rooms in Japan", fill="black",
                               font=__import__("PIL.ImageFont", fromlist=["ImageFont"]).load_default(size=32))
    messages += [{"role": "assistant", "content": reply},
                 {"role": "user", "content": [protocol.image_part(protocol.prepare_image(other)[1])]}]
    answer = parse_reply(policy.complete(messages).text)
    # that page does not hold the whole question either: the answer is the first page's zoomed reading
    assert answer.action == "answer" and answer.argument == "7.9", answer.thought
    assert "zoomed region" in answer.thought and "no vision-language model" in answer.thought


@pytest.mark.slow  # OCR of real pages
def test_a_page_that_holds_the_whole_question_is_answered_without_a_second_look(ocr):
    policy = OfflinePolicy(ocr=ocr)
    page, jpeg = protocol.prepare_image(rendered_table())
    messages = [prompt("What is Japan's figure for 2014?"), {"role": "assistant", "content": "<think>x</think><search>Japan 2014</search>"},
                {"role": "user", "content": [protocol.image_part(jpeg)]}]
    reply = policy.complete(messages).text
    bbox = check_action(parse_reply(reply), page.size).bbox
    crop = rendered_table().crop(protocol.pil_crop_box(protocol.crop_box(list(bbox), page.size, (900, 500))))
    messages += [{"role": "assistant", "content": reply}, {"role": "user", "content": [protocol.image_part(jpeg_of(crop))]}]
    answer = parse_reply(policy.complete(messages).text)
    assert answer.action == "answer" and answer.argument == "7.9", answer.thought


@pytest.mark.slow  # OCR of real pages
def test_the_final_turn_nudge_makes_it_answer_from_the_page(ocr):
    policy = OfflinePolicy(ocr=ocr)
    _, jpeg = protocol.prepare_image(rendered_table())
    messages = [prompt("How many trips did India make in 2013?"),
                {"role": "assistant", "content": "<think>x</think><search>India 2013</search>"},
                {"role": "user", "content": [protocol.image_part(jpeg), protocol.text_part(FINAL_TURN_NUDGE)]}]
    answer = parse_reply(policy.complete(messages).text)
    assert answer.action == "answer" and answer.argument == "7.2"
    assert "asks for the answer now" in answer.thought


# --- end to end: the real loop over the real demo index ----------------------------------------


@pytest.fixture(scope="module")
def demo_policy(demo_index):
    """One policy for the end-to-end tests, so a page OCR'd once is reused (its cache is by image bytes)."""
    return make_policy("offline", index=demo_index)


def run(policy, index, question: str, max_turns: int = 10):
    config = AgentConfig(max_turns=max_turns)
    traj = new_trajectory(question, policy, config)
    turns = list(run_episode(traj, policy, LocalSearcher(index), config))
    return traj, turns


@pytest.mark.slow  # the 25 demo pages OCRed into an index
@pytest.mark.parametrize("question, answer, cell", [
    # the answer cell in page pixels of slide_3_1024 (1024x768): China's 2020 outbound trips
    ("How many outbound trips, in millions, is China expected to make in 2020?", "134", (724, 197, 804, 236)),
    # aliyun4_4 (5334x3000): the 2017 of the timeline, under "VPC对等连接发布"
    ("VPC对等连接是哪一年发布的？", "2017", (1804, 1779, 2078, 1902)),
    # slide_6_1024: a bar chart without values; the crop must hold the "Japan" label (its bar is measured)
    ("In which country do leisure travellers use a travel agent the most?", "Japan", (76, 343, 109, 361)),
])
def test_real_questions_are_answered_through_the_loop_with_a_crop_that_holds_the_answer(demo_index, demo_policy, question, answer, cell):
    traj, turns = run(demo_policy, demo_index, question)
    assert traj.finished and traj.answer == answer, [t.raw_text for t in turns]
    assert traj.policy["name"] == "offline" and "no vision-language model" in traj.policy["description"]
    assert all(t.action != "invalid" for t in turns)
    assert all(HONEST_PREFIX.strip() in (t.thought or "") for t in turns)
    crops = [t for t in turns if t.action == "bbox"]
    assert crops, "the policy should zoom before answering"
    assert inside(cell, crops[-1].bbox_page), (crops[-1].bbox_page, cell)
    assert len(turns) <= 5


@pytest.mark.slow  # OCR of real pages
def test_a_two_turn_budget_answers_from_the_page_after_the_nudge(demo_index, demo_policy):
    traj, turns = run(demo_policy, demo_index, "How many outbound trips, in millions, is China expected to make in 2020?", max_turns=2)
    assert [t.action for t in turns] == ["search", "answer"]
    assert traj.finished and traj.answer == "134"
    assert FINAL_TURN_NUDGE in turns[0].feedback


# --- dates, amounts, changes, covers and column charts (the rules added for reports) ---------------


def test_dates_currency_codes_units_and_numbers_touching_chinese_are_whole_spans():
    def numbers(line: str) -> list[tuple[str, str]]:
        return [(s.text, s.kind) for s in spans_of([tb(line, 0, 0, 600, 20)]) if s.kind != "text"]

    assert ("12 September 2025", "date") in numbers("The plant opened on 12 September 2025;")
    assert ("Sept. 3, 2014", "date") in numbers("launched Sept. 3, 2014 in Hangzhou")
    assert ("2019年3月", "date") in numbers("2019年3月发布")
    assert ("EUR 2.15 per cubic metre", "number") in numbers("a tariff of EUR 2.15 per cubic metre for 2026")
    assert ("3,340 million", "number") in numbers("3,340 million litres")
    assert ("5 per cent", "percent") in numbers("rose by 5 per cent")
    # Chinese characters are not letters for the number's edges: "为184,300名" is 184,300, not 300
    assert numbers("水务局为184,300名居民供水") == [("184,300", "number")]


def test_when_questions_prefer_a_full_date_to_the_bare_year():
    boxes = [tb("Annual Report 2025", 40, 20, 300, 50),
             tb("The new Kestrel Ridge treatment plant opened on 12 September 2025;", 40, 100, 700, 120)]
    q = analyse_question("When did the Kestrel Ridge treatment plant open?")
    assert q.kind == "date"
    assert best(boxes, q, SIZE).span.text == "12 September 2025"
    # with no full date on the page, the year still answers
    boxes[1] = tb("The new Kestrel Ridge treatment plant opened in 2025;", 40, 100, 700, 120)
    assert best(boxes, q, SIZE).span.text == "2025"


@pytest.mark.parametrize("line, question, answer", [
    ("EUR 2.15 per cubic metre for 2026, up from EUR 1.98.", "What water tariff did the board approve for 2026?",
     "EUR 2.15 per cubic metre"),
    ("Leakage fell to 9.8% in 2025, down from 14.2%.", "What was the leakage rate in 2025?", "9.8%"),
    ("管网漏损率从14.2%降至9.8%。", "水务局的管网漏损率降到了多少？", "9.8%"),
])
def test_the_value_a_change_starts_from_is_not_the_answer(line, question, answer):
    boxes = [tb("Decision 2025/17: the board approved a water tariff of", 40, 80, 500, 100), tb(line, 40, 104, 520, 124)]
    assert best(boxes, question, SIZE).span.text == answer


COVER = [tb("APSARA云栖大会", 20, 22, 116, 37), tb("更加安全、", 55, 137, 300, 196), tb("可靠的数据中心网络", 310, 137, 788, 196),
         tb("彭昔敏", 385, 302, 473, 338), tb("阿里云云网络高级产品专家", 313, 342, 529, 365)]


@pytest.mark.parametrize("question, part, answer", [
    ("这个演讲的标题是什么？", "title", "更加安全、可靠的数据中心网络"),
    ("《更加安全、可靠的数据中心网络》这个演讲的主讲人是谁？", "presenter", "彭昔敏"),
    ("What is the title of the presentation?", "title", "更加安全、可靠的数据中心网络"),
    ("Who gave this presentation?", "presenter", "彭昔敏"),
])
def test_title_and_presenter_questions_read_the_cover_layout(question, part, answer):
    q = analyse_question(question)
    assert q.wants == part
    assert not {"标题", "演讲", "主讲", "title", "presentation"} & set(q.terms)  # they name nothing on the page
    assert best(COVER, q, SIZE).span.text == answer


@pytest.mark.parametrize("question", ["What is the presenter's email address?", "第01章的标题是什么？",
                                      "What is the title of the chart on slide 5?", "Which country made the most trips?",
                                      "彭昔敏在阿里云担任什么职务？"])
def test_questions_about_other_things_are_not_cover_questions(question):
    assert analyse_question(question).wants not in ("title", "presenter")


def test_a_cover_looks_more_like_a_cover_than_a_section_divider_or_a_chart():
    divider = [tb("APSARA云栖大会", 20, 22, 116, 37), tb("数据中心网络面临的挑战", 128, 176, 419, 208), tb("01", 129, 247, 173, 285)]
    table = [tb(f"Row {i} label", 40, 100 + 30 * i, 200, 120 + 30 * i) for i in range(12)]
    assert cover_likeness(COVER, "title") > cover_likeness(divider, "title") > cover_likeness(table, "title")
    assert cover_likeness(COVER, "presenter") > 0.5 > cover_likeness(divider, "presenter")


COLUMNS = [tb("Figure 1. Capital spending by project, 2025 (EUR million)", 54, 76, 397, 95),
           tb("50", 68, 135, 84, 151), tb("42.7", 207, 173, 233, 189), tb("40", 68, 200, 84, 215), tb("30", 69, 265, 82, 279),
           tb("20", 68, 329, 84, 344), tb("18.4", 112, 331, 137, 344), tb("11.2", 398, 376, 424, 392), tb("10", 69, 394, 82, 408),
           tb("6.9", 303, 404, 322, 419), tb("Riverside mains", 104, 472, 163, 484), tb("Kestrel Ridge plant", 199, 471, 268, 483),
           tb("Smart meters", 295, 472, 346, 484), tb("Reservoir repair", 391, 472, 449, 484)]


def test_column_chart_values_belong_to_the_label_under_them_and_axis_ticks_to_none():
    pairs = {COLUMNS[label].text: value for label, _, value in labelled_values(COLUMNS)}
    assert pairs == {"Riverside mains": 18.4, "Kestrel Ridge plant": 42.7, "Smart meters": 6.9, "Reservoir repair": 11.2}


@pytest.mark.parametrize("question, answer", [
    ("Which capital project had the largest spending in 2025?", "Kestrel Ridge plant"),
    ("Which capital project had the largest spending in 2025, and how much was it?", "Kestrel Ridge plant, 42.7"),
    ("Which project had the smallest capital spending?", "Smart meters"),
])
def test_extreme_questions_over_a_column_chart_with_printed_values(question, answer):
    assert best(COLUMNS, question, SIZE).span.text == answer


@pytest.mark.parametrize("question, answer", [
    ("What is the key customer segment in Japan?", 'GENERATION “S”'),
    ("What do APAC travellers in emerging countries still rely on?", "TRADITIONAL TRAVEL AGENTS"),
    ("Via which markets does the deck capture the size and scale of APAC?", "JAPAN, CHINA, INDIA"),
])
def test_title_claims_answer_what_they_restate(question, answer):
    boxes = {
        "segment": [tb("JAPAN – SOLO TRAVELLERS RULE, WHILE", 41, 10, 589, 37), tb("GENERATION “S”IS THE KEY CUSTOMER", 42, 40, 581, 65),
                    tb("SEGMENT", 41, 69, 176, 95), tb("Typical format of leisure travel by country", 64, 156, 350, 177)],
        "rely": [tb("APAC TRAVELLERS IN EMERGING COUNTRIES STILL", 42, 14, 666, 36),
                 tb("RELY ON TRADITIONAL TRAVEL AGENTS, WHILE THE", 41, 40, 677, 66),
                 tb("MOBILE BOOKINGS ARE RISING AT LEAST IN THE", 42, 68, 635, 90), tb("BUSINESS SEGMENT", 42, 95, 293, 118)],
        "markets": [tb("SELECTED APAC MARKETS –", 41, 141, 611, 177), tb("CAPTURING THE SIZE AND", 41, 185, 578, 222),
                    tb("SCALE VIA JAPAN, CHINA, INDIA", 38, 227, 691, 270)],
    }
    page = boxes["segment" if "segment" in question else "rely" if "rely" in question else "markets"]
    assert best(page, question, (731, 548)).span.text == answer


def test_words_with_two_endings_match_but_travel_and_traveller_do_not():
    assert fuzzy_equal("capture", "capturing") and fuzzy_equal("inflection", "inflect")
    assert not fuzzy_equal("travel", "traveller") and not fuzzy_equal("rate", "rating")


def test_a_chinese_unit_ends_its_number_and_forms_no_word_with_what_follows():
    terms = analyse_question("2009年阿里云的网络形态是什么？").terms
    assert "2009" in terms and "阿里" in terms and "年阿" not in terms


STAGES = [tb("IT系统上云", 75, 163, 139, 180), tb("生产系统上云", 279, 162, 357, 181), tb("企业多分支上云", 484, 163, 573, 181),
          tb("全量系统上云", 701, 163, 778, 181), tb("弹性、按需", 52, 303, 162, 332), tb("稳定、连续", 262, 303, 372, 330),
          tb("安全、灵活", 473, 304, 583, 330), tb("智能、成本", 685, 305, 794, 332), tb("·弹性、按需付费", 54, 341, 154, 357),
          tb("· 平滑迁移，持续扩展", 255, 340, 380, 358), tb("· 公网访问安全、", 479, 340, 573, 358),
          tb("· 可观测、可预期", 676, 340, 778, 358), tb("· 灵活部署", 53, 358, 119, 376), tb("·稳定、可靠", 254, 357, 333, 376)]


def test_which_stage_questions_answer_the_heading_of_the_column_not_a_sibling_bullet():
    q = analyse_question("在上云的哪个阶段需要平滑迁移、持续扩展？")
    assert q.wants == "stage"
    assert best(STAGES, q, (844, 475)).span.text == "生产系统上云"
    # without asking for a stage, a bullet point still never answers for its sibling bullet
    top = ranked(STAGES, "平滑迁移、持续扩展的阶段有什么要求？", (844, 475))
    assert top[0].span.text != "稳定、可靠"


GROWTH = [tb("International business departures by", 432, 138, 686, 159), tb("women,2011-30", 497, 156, 623, 175),
          tb("+232%", 494, 192, 522, 206), tb("+891%", 554, 268, 583, 281), tb("+288%", 590, 390, 615, 401),
          tb("+25%", 421, 409, 442, 422), tb("+24%", 625, 407, 647, 418), tb("+71%", 686, 389, 710, 403),
          tb("Australia", 413, 427, 447, 440), tb("China", 469, 427, 494, 441), tb("India", 548, 427, 570, 441),
          tb("Indonesia", 585, 429, 622, 439), tb("Japan", 620, 429, 645, 439), tb("Singapore", 671, 427, 712, 442)]


@pytest.mark.parametrize("question, answer", [
    ("By what percentage are international business departures by Indian women projected to grow from 2011 to 2030?", "+891%"),
    ("What is the growth of business departures by women from China?", "+232%"),
    ("Which country has the highest growth of international business departures by women?", "India"),
])
def test_a_column_chart_value_is_the_one_printed_above_the_named_category(question, answer):
    assert best(GROWTH, question, (731, 548)).span.text == answer


def test_a_chart_whose_title_restates_more_of_the_question_than_a_sentence_is_measured():
    pixels, boxes = bar_chart({"Singapore": (120, 40), "Japan": (300, 100), "India": (200, 380)})
    # a slide title uses the question's superlative but restates less of it than the chart title does
    boxes.append(tb("TRAVEL AGENTS ARE THE MOST COMMON CHANNEL", 40, 540, 700, 570))
    q = analyse_question("Which country has the most leisure travellers over 65 years of age?")
    assert best(boxes, q, SIZE, pixels).span.text == "Japan"
    # one that restates more of the question than the chart title answers from its own words
    boxes[-1] = tb("INDIA HAS THE MOST LEISURE TRAVELLERS OVER 65 YEARS OF AGE", 40, 540, 700, 570)
    assert best(boxes, q, SIZE, pixels).span.text == "INDIA"


@pytest.mark.parametrize("question, rank, answer", [
    ("Which country ranks second by the number of leisure travellers over 65?", 2, "India"),
    ("Which country has the third largest share of leisure travellers over 65?", 3, "Singapore"),
])
def test_rank_questions_over_a_bar_chart_take_the_nth_longest_bar(question, rank, answer):
    pixels, boxes = bar_chart({"Singapore": (120, 40), "Japan": (300, 100), "India": (200, 380)})
    q = analyse_question(question)
    assert q.place == rank
    cand = best(boxes, q, SIZE, pixels)
    assert cand.span.text == answer and f"number {rank} by length" in cand.explain()


RANK_MAP = [tb("Top Aspirational destinations among Japanese outbound travellers", 38, 106, 494, 123),
            tb("1 Paris-France", 376, 219, 458, 246), tb("2NY-USA", 235, 230, 297, 256), tb("3 Rome-Italy", 415, 260, 491, 288),
            tb("4 Hawaii", 639, 297, 694, 325), tb("Okinawa (#7), Kyoto (#12) and", 428, 339, 629, 358),
            tb("Hokkaido (#18) are the 3 top", 435, 356, 620, 375), tb("domestic aspirations destinations", 420, 375, 635, 392)]


@pytest.mark.parametrize("question, answer", [
    ("Where does Hawaii rank among the aspirational destinations of Japanese outbound travellers?", "4"),
    ("What is Kyoto's rank among Japanese domestic aspiration destinations?", "12"),
    ("What is Okinawa's rank among Japanese domestic aspiration destinations?", "7"),
])
def test_ranks_are_read_from_ranked_lists_and_bracketed_notes(question, answer):
    assert best(RANK_MAP, question, (731, 548)).span.text == answer


def test_phone_questions_read_the_number_as_printed_and_title_slide_is_not_a_title_question():
    boxes = [tb("APAC ONLINE TRAVEL", 36, 137, 579, 185), tb("SUSHANT SHARMA", 39, 446, 214, 466),
             tb("E: SUSHANT.MAILS@GMAIL.COM", 38, 469, 338, 490), tb("M:+852 6571 1590", 40, 495, 205, 512)]
    q = analyse_question("What mobile phone number does Sushant Sharma list on the title slide?")
    assert q.wants == "phone"
    assert best(boxes, q, (731, 548)).span.text == "+852 6571 1590"


def test_a_crop_keeps_a_structural_pick_it_still_reads_even_if_ocr_runs_labels_together():
    q = analyse_question("How much are international business departures by Indonesian women expected to grow?")
    assert best(GROWTH, q, (731, 548)).span.text == "+288%"
    # on the zoomed crop OCR ran "Indonesia" and "Japan" into one label, which names two columns
    crop = [b for b in GROWTH if b.text not in ("Indonesia", "Japan")] + [tb("Indonesia Japan", 585, 429, 645, 439)]
    on_crop = page_of(crop, q, (731, 548))
    kept = answer_on_crop(on_crop, Weights(), picked("+288%", reader="printed_values"))
    assert kept.span.text == "+288%"
    assert answer_on_crop(on_crop, Weights(), picked("+999%", reader="printed_values")).span.text != "+999%"  # not on the crop: it decides


def test_extreme_questions_skip_labels_set_aside_and_catch_all_categories():
    pixels, boxes = bar_chart({"Singapore": (120, 40), "Japan": (300, 100), "Other": (20, 10)})
    q = analyse_question("Which country has the smallest proportion of leisure travellers over 65?")
    assert best(boxes, q, SIZE, pixels).span.text == "Singapore"  # "Other" lumps countries together
    q = analyse_question("Apart from Singapore, which country has the smallest proportion of leisure travellers over 65?")
    assert q.excluded == ("singapore",)
    assert best(boxes, q, SIZE, pixels).span.text == "Japan"


def test_chinese_cloze_skips_the_particles_between_the_question_words_and_the_answer():
    q = analyse_question("第一章节页上说数据中心网络面临的是什么？")
    assert q.cloze == "面临"
    boxes = [tb("APSARA云栖大会", 20, 22, 116, 37), tb("数据中心网络面临的挑战", 128, 176, 419, 208), tb("01", 129, 247, 173, 285)]
    assert best(boxes, q, (844, 475)).span.text == "挑战"


# --- the package's shape ----------------------------------------------------------------------------

LAYERS = ["terms", "question", "layout", "spans", "prose", "page", "weights", "scoring", "readers", "crop", "conversation", "policy"]


def test_modules_import_only_the_layers_below_them_and_only_at_the_top():
    """Imports run one way (agent/policies/offline/__init__.py lists the order): no cycle, and no
    import inside a function to patch one (the lazy OCR import names an optional dependency)."""
    import ast
    from pathlib import Path

    import agent.policies.offline as package

    root = Path(package.__file__).parent
    files = sorted(root.rglob("*.py"))
    assert {f.stem if f.parent == root else "readers" for f in files} - {"__init__"} == set(LAYERS)
    for f in files:
        layer = "readers" if f.parent != root else f.stem
        if layer == "__init__":
            continue
        tree = ast.parse(f.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, ast.ImportFrom) or not node.level:
                continue
            assert node in tree.body, f"{f.name}:{node.lineno} imports inside a function"
            names = [node.module.split(".")[0]] if node.module else [a.name for a in node.names]
            for name in names:
                if layer == "readers" and node.level == 1:
                    continue  # readers/__init__.py registering its own plug-ins
                assert LAYERS.index(name) < LAYERS.index(layer), f"{f.relative_to(root)} imports {name}, a layer above it"
