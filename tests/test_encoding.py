"""`nmt.data.encoding`, the one path from text to ids: the blank-line rule, the cut of an over-long line and its
warning, the commands' agreement on a blank line (translate, embed and score read it as the same empty
sentence), and text that is not Unicode (a lone surrogate) refused for every caller."""

from __future__ import annotations

import numpy as np
import pytest

from nmt.data.encoding import (
    Source,
    UnencodableText,
    cut,
    encode_sources,
    is_blank,
    source_ids,
    target_ids,
    too_long,
)
from nmt.data.tokenizer import EOS
from nmt.decoding import SearchConfig
from nmt.inference import Translator
from tests.factories import multi30k_lines, tiny_checkpoint, tiny_tokenizer

LINES = multi30k_lines("val", "en", 4)
BLANKS = ["", " ", "\t", "\u3000 \u00a0", "\x85"]  # whitespace as Python's str.strip knows it


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()


def test_a_line_is_its_pieces_and_eos_and_a_blank_line_the_empty_sentence(tokenizer):
    assert source_ids(tokenizer, LINES) == tokenizer.encode_src(LINES)
    assert target_ids(tokenizer, LINES) == tokenizer.encode_tgt(LINES)
    assert all(is_blank(text) for text in BLANKS) and not is_blank(".")
    assert source_ids(tokenizer, BLANKS) == [[EOS]] * len(BLANKS)
    assert target_ids(tokenizer, BLANKS) == [[]] * len(BLANKS)
    assert source_ids(tokenizer, []) == target_ids(tokenizer, []) == []


def test_a_blank_line_gets_no_ids_to_translate_and_an_over_long_one_is_cut_with_one_warning(tokenizer):
    ids = tokenizer.encode_src(LINES)
    limit = len(ids[1]) - 2  # line 2 is one piece too long, line 1 (if no longer) fits
    warnings: list[str] = []
    lines = [LINES[0], LINES[1], " "]
    sources = encode_sources(
        tokenizer, lines, max_tokens=limit, where=lambda n: f"in.txt:{n}", first=7, warn=warnings.append
    )
    assert sources[1] == Source(8, ids[1][:limit] + [EOS]) and sources[2] == Source(9, [])
    assert sources[0] == Source(7, cut(ids[0], limit))
    expected = too_long("in.txt:8", len(ids[1]) - 1, limit)
    assert expected == f"in.txt:8: {len(ids[1]) - 1} pieces; only the first {limit} are read (--max-input-tokens)"
    assert warnings[-1] == expected and len(warnings) == (len(ids[0]) - 1 > limit) + 1
    assert cut(ids[1], len(ids[1]) - 1) is ids[1]  # as long as the limit: untouched, EOS kept


def test_translate_embed_and_score_read_a_blank_line_as_the_empty_sentence(tmp_path):
    translator = Translator.load(tiny_checkpoint(tmp_path), device="cpu")
    translations = list(translator.translate(["", " \t ", LINES[0]], SearchConfig(beam_size=2)))
    assert [t.text for t in translations[:2]] == ["", ""] and translations[2].text
    vectors = translator.encode(["", " \t ", "\u3000", LINES[0]])
    assert np.array_equal(vectors[0], vectors[1]) and np.array_equal(vectors[0], vectors[2])
    assert not np.array_equal(vectors[0], vectors[3])
    scores = translator.score(["", "  ", LINES[0]], ["un chien", "un chien", " "])
    assert scores.logprob[0] == scores.logprob[1] and scores.empty.tolist() == [True, True, True]
    assert scores.logprob[2] == translator.score([LINES[0]], [""]).logprob[0]


LONE_SURROGATES = ["\ud800", "a dog \udfff", "\udc80 runs", "é\ud83d"]  # half an emoji's pair, surrogateescape's


@pytest.mark.parametrize("text", LONE_SURROGATES)
def test_a_lone_surrogate_is_refused_naming_the_text_and_the_character(tokenizer, text):
    where = text.index(next(c for c in text if "\ud800" <= c <= "\udfff"))
    reason = f"a lone surrogate (U+{ord(text[where]):04X}) at character {where}: not Unicode text"
    for encode in (source_ids, target_ids, lambda t, texts: encode_sources(t, texts, max_tokens=9, where=str)):
        with pytest.raises(UnencodableText) as caught:
            encode(tokenizer, [LINES[0], text])
        assert (caught.value.index, caught.value.reason, str(caught.value)) == (1, reason, f"text 1: {reason}")
    assert source_ids(tokenizer, ["\U0001f600 a dog"])  # a whole pair (an emoji) is text


def test_the_python_api_refuses_a_lone_surrogate_as_every_command_does(tmp_path):
    translator = Translator.load(tiny_checkpoint(tmp_path), device="cpu")
    for call in (
        lambda: list(translator.translate([LINES[0], "\ud800"])),
        lambda: translator.encode(["\ud800"]),
        lambda: translator.score([LINES[0]], ["\ud800"]),
    ):
        with pytest.raises(UnencodableText, match=r"^text \d+: a lone surrogate \(U\+D800\) at character 0"):
            call()
