"""Text to the model's ids: the one place a sentence is tokenized, for every command, the server and the corpora.

    text ──SentencePiece──▶ source: its pieces + EOS              target: its pieces (no BOS/EOS)
         a blank line (empty, or whitespace only) is the empty sentence: source EOS alone, target no pieces
         ──cut──▶ an over-long source: its first max_tokens pieces + EOS

What a caller does with a blank or an over-long sentence is its own rule, on these ids: translation does not
search the empty sentence (its translation is empty: `encode_sources` gives it no ids), the encoder reads it as
EOS alone (``nmt embed``: the empty phrase's vector), scoring scores it and flags the pair; inference cuts an
over-long line with the one warning `too_long` words (``FILE:LINE: N pieces; …``), scoring cuts either side to
its ``max_len`` and flags the pair, training drops the pair and evaluation cuts it silently (the datamodule).

Text that is not Unicode, a lone surrogate (U+D800–U+DFFF), is refused here for every caller
(`UnencodableText`, naming the text and the character): files cannot hold one (their readers refuse the bytes
ED A0 80 as invalid UTF-8, or replace them with U+FFFD under ``--encoding-errors replace``), but a Python string
or a JSON escape (``"\\ud800"``) can, and SentencePiece cannot take it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import NamedTuple

from nmt.data.tokenizer import EOS, Tokenizer


class Source(NamedTuple):
    """One input line, encoded for translation."""

    number: int  # 1-based line number
    ids: list[int]  # source pieces followed by EOS; empty for a blank line (which the model never sees)


def is_blank(text: str) -> bool:
    """An empty line, or one of whitespace only: the empty sentence."""
    return not text.strip()


_SURROGATE = re.compile(r"[\ud800-\udfff]")


class UnencodableText(ValueError):
    """Text `index` of a sequence holds a lone surrogate at character `position`: not Unicode text."""

    def __init__(self, index: int, position: int, code_point: int) -> None:
        self.index = index
        self.reason = f"a lone surrogate (U+{code_point:04X}) at character {position}: not Unicode text"
        super().__init__(f"text {index}: {self.reason}")


def check_encodable(texts: Sequence[str]) -> None:
    """An `UnencodableText` for the first text holding a lone surrogate, which no tokenizer can take."""
    for index, text in enumerate(texts):
        if not text.isascii() and (found := _SURROGATE.search(text)):
            raise UnencodableText(index, found.start(), ord(found.group()))


def source_ids(tokenizer: Tokenizer, texts: Sequence[str]) -> list[list[int]]:
    """The pieces of each source text followed by EOS; a blank text is the empty sentence, EOS alone."""
    check_encodable(texts)
    rows = tokenizer.encode_src(texts) if texts else []
    return [[EOS] if is_blank(text) else ids for text, ids in zip(texts, rows, strict=True)]


def target_ids(tokenizer: Tokenizer, texts: Sequence[str]) -> list[list[int]]:
    """The pieces of each target text, without BOS/EOS; a blank text has none."""
    check_encodable(texts)
    rows = tokenizer.encode_tgt(texts) if texts else []
    return [[] if is_blank(text) else ids for text, ids in zip(texts, rows, strict=True)]


def cut(ids: list[int], max_tokens: int) -> list[int]:
    """Source ids (pieces + EOS) cut to their first `max_tokens` pieces + EOS: the sentence read as if it ended
    there."""
    return ids if len(ids) - 1 <= max_tokens else ids[:max_tokens] + [EOS]


def too_long(where: str, pieces: int, max_tokens: int) -> str:
    """The warning for a line of `pieces` source pieces cut to `max_tokens`, naming it (FILE:LINE, or a request's
    field)."""
    return f"{where}: {pieces} pieces; only the first {max_tokens} are read (--max-input-tokens)"


def encode_sources(
    tokenizer: Tokenizer,
    texts: Sequence[str],
    *,
    max_tokens: int,
    where: Callable[[int], str],
    first: int = 1,
    warn: Callable[[str], None] | None = None,
) -> list[Source]:
    """`texts` as the `Source`s of lines numbered from `first`, for translation: a blank line no ids, any other its
    pieces + EOS, cut to `max_tokens` pieces when longer (one huge line must not pad its whole batch to its
    length), with ``warn(too_long(where(number), …))``."""
    sources = []
    for number, (text, ids) in enumerate(zip(texts, source_ids(tokenizer, texts), strict=True), start=first):
        if is_blank(text):
            ids = []
        elif len(ids) - 1 > max_tokens:
            if warn is not None:
                warn(too_long(where(number), len(ids) - 1, max_tokens))
            ids = cut(ids, max_tokens)
        sources.append(Source(number, ids))
    return sources
