"""The offline policy's special readers (agent/policies/offline/readers/), one test each, on the real
text of the demo pages: the OCR lines the demo index stored for a page, and its pixels where a reader
measures them. Each test checks that the reader answers, that it is the reader that answered (the
candidate names it, so the policy's thought does), and that it stays out of questions it is not for."""
from __future__ import annotations

import numpy as np
import pytest

from agent.policies.offline.page import Page
from agent.policies.offline.question import analyse_question
from agent.policies.offline.readers import READERS, best_answer
from agent.policies.offline.readers import bar_lengths, contact, document, item_list, printed_values, table_extreme
from agent.policies.offline.weights import Weights


@pytest.fixture(scope="module")
def read(demo_index):
    """read(page_id, question, pixels=True) -> the policy's best candidate on that demo page."""
    def read(page_id: str, question: str, pixels: bool = True):
        page = demo_index.page(page_id)
        image = np.asarray(demo_index.page_image(page_id).convert("RGB")) if pixels else None
        return best_answer(Page(page.boxes, (page.width, page.height), analyse_question(question), image), Weights())
    return read


def test_every_reader_says_what_it_reads_and_has_the_plug_in_calls():
    for reader in READERS:
        assert callable(reader.applies) and callable(reader.read), reader.__name__
        assert reader.__doc__ and len(reader.__doc__.split()) >= 20, f"{reader.__name__} should say what it reads and why"
    assert len({r.__name__ for r in READERS}) == len(READERS)


@pytest.mark.parametrize("page_id, question, answer", [
    ("aliyun4_1", "《更加安全、可靠的数据中心网络》这个演讲的主讲人是谁？", "彭昔敏"),
    ("slide_1_1024", "Who is the author of the APAC online travel market presentation?", "SUSHANT SHARMA"),
])
def test_document_reader_reads_the_presenter_off_a_real_cover(read, page_id, question, answer):
    cand = read(page_id, question)
    assert cand.reader == "document" and cand.span.text == answer
    assert document.applies(analyse_question(question))
    assert not document.applies(analyse_question("彭昔敏在阿里云担任什么职务？"))


def test_document_reader_reads_the_title_as_one_phrase(read):
    cand = read("aliyun4_1", "这个演讲的标题是什么？")
    assert cand.reader == "document"
    assert cand.span.text.replace("、", "").replace(" ", "") == "更加安全可靠的数据中心网络"


@pytest.mark.parametrize("page_id, question, answer", [
    ("slide_1_1024", "What is the presenter's email address?", "SUSHANT.MAILS@GMAIL.COM"),
    ("slide_3_1024", "Where does the outbound trips data come from?", "MasterCard Intelligence"),
])
def test_contact_reader_finds_the_shape_the_question_asks_for(read, page_id, question, answer):
    cand = read(page_id, question)
    assert cand.reader == "contact" and cand.span.text == answer
    assert not contact.applies(analyse_question("How many outbound trips did China make in 2014?"))


@pytest.mark.parametrize("page_id, question, answer", [
    ("slide_6_1024", "In which country do leisure travellers use a travel agent the most?", "Japan"),
    ("slide_6_1024", "Which country has the lowest share of leisure travellers using a travel agent?", "Singapore"),
    ("slide_13_1024", "Which mobile app ranks second in usage in China?", "Ctrip"),
])
def test_bar_length_reader_measures_the_bars_of_a_real_chart(read, page_id, question, answer):
    cand = read(page_id, question)
    assert cand.reader == "bar_lengths" and cand.span.text == answer
    assert "measured in pixels" in cand.explain()
    # without the pixels nothing is measured, and the reader gives way
    assert read(page_id, question, pixels=False) is None or read(page_id, question, pixels=False).reader != "bar_lengths"


@pytest.mark.parametrize("page_id, question, answer", [
    ("slide_7_1024", "By what percentage are international business departures by Indian women projected to grow from 2011 "
                     "to 2030?", "+891%"),
    ("slide_17_1024", "Which country has the highest credit card penetration in SEA?", "SG"),
])
def test_printed_values_reader_pairs_values_with_the_category_under_them(read, page_id, question, answer):
    cand = read(page_id, question)
    assert cand.reader == "printed_values" and cand.span.text == answer


def test_table_extreme_reader_compares_a_column_of_a_real_table(read):
    cand = read("slide_16_1024", "Which country has the highest power distance score?")
    assert cand.reader == "table_extreme" and cand.span.text == "China"
    assert table_extreme.applies(analyse_question("Which country has the lowest power distance score?"))
    assert not table_extreme.applies(analyse_question("What is China's power distance score?"))


def test_item_list_reader_lists_the_labels_stacked_in_a_real_column(read):
    cand = read("slide_20_1024", "On the supply side of the value chain, which three groups sit under inventory fulfillment "
                                 "and optimization?")
    assert cand.reader == "item_list" and cand.span.text == "Merchants, Agencies, Partners"
    assert not item_list.applies(analyse_question("Which group sits under inventory fulfillment?"))


def test_readers_stay_out_of_plain_lookups(read):
    q = analyse_question("How many outbound trips, in millions, is China expected to make in 2020?")
    assert not any(r.applies(q) for r in (document, contact, bar_lengths, table_extreme, item_list))
    assert printed_values.applies(q)  # a number question may be a column chart's value; on a table it finds none
    cand = read("slide_3_1024", q.text)
    assert cand.reader == "" and cand.span.text == "134"
