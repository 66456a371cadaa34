"""Vocabulary shortlists for decoding (Marian's lexical shortlist; Junczys-Dowmunt et al. 2018, AmuNMT).

Most of a decoding step's output layer goes to target pieces that cannot occur in this batch's translations. A
shortlist computes the output layer, its softmax and the top-k only over

    the `frequent` most frequent target pieces  ∪  the `per_word` best translations of each source piece
    of the batch  ∪  {EOS},

computed once for a batch, while each sentence chooses among its own part of it (its pieces' translations, the
frequent pieces, EOS), renormalised over that, so that its translation does not depend on its batch. The "best
translations" are ranked by a lexical translation table p(t | s) estimated on the training corpus with IBM
Model 1 (``nmt.data.lexicon``). The probabilities are renormalised over the shortlist, so scores printed under
one are not exact log-probabilities: the scoring commands never use one.

The table is a text file (``nmt shortlist`` writes it: `nmt.data.lexicon.write_table`), one entry per line,
tab-separated, pieces as SentencePiece writes them, so it can be read, filtered or built by another tool:

    SOURCE_PIECE  TARGET_PIECE  p(target | source)     the best translations of each source piece, best first
    (empty)       TARGET_PIECE  count                   the target pieces by corpus frequency, most frequent first
"""

from __future__ import annotations

import io
import itertools
import math
from collections.abc import Iterable, Sequence

import numpy as np
import torch
from torch import Tensor

from nmt.data.tokenizer import EOS, Tokenizer
from nmt.errors import InputError
from nmt.textio import BOM, decoded_lines, read_binary

SHORTLIST_FIRST = 100
"""Default number of most frequent target pieces always in a shortlist."""
SHORTLIST_PER_WORD = 50
"""Default number of translations of each source piece in a shortlist."""


class Shortlist:
    """The target pieces a batch may produce: `frequent` most frequent ∪ `per_word` best per source piece ∪ EOS."""

    def __init__(self, translations: Sequence[Sequence[int]], frequent: Sequence[int], *, per_word: int,
                 first: int, vocab_size: int) -> None:  # fmt: skip
        self.vocab_size, self.per_word, self.first = vocab_size, per_word, first
        self.translations = [np.asarray(t[:per_word], dtype=np.int64) for t in translations]
        self.base = np.asarray([EOS, *frequent[:first]], dtype=np.int64)

    @classmethod
    def read(cls, path: str, tokenizer: Tokenizer, *, first: int, per_word: int) -> Shortlist:
        """Read a table written by `nmt.data.lexicon.write_table` (or by hand in its format) for the model of
        `tokenizer`; a line that is not three fields, a piece the model does not know, or a bad number is an
        `InputError` naming the line."""
        src_ids = {p: i for i, p in enumerate(tokenizer.src_pieces(range(tokenizer.src_vocab_size)))}
        tgt_ids = {p: i for i, p in enumerate(tokenizer.tgt_pieces(range(tokenizer.tgt_vocab_size)))}
        raw = read_binary(path)
        columns = _table_columns(raw, src_ids, tgt_ids)
        if columns is None:  # something in it is off: the line-by-line reader says what, and where (of what was
            # read: stdin cannot be read twice)
            translations, frequent = _checked_entries(path, decoded_lines(io.BytesIO(raw), path), src_ids, tgt_ids)
        else:
            translations, frequent = _entries(*columns, len(src_ids), per_word)
        if not len(frequent) and not any(len(t) for t in translations):
            raise InputError(path=path, message="an empty shortlist table")
        return cls(translations, frequent, per_word=per_word, first=first, vocab_size=tokenizer.tgt_vocab_size)

    def for_batch(self, sources: Iterable[Sequence[int]], device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
        """(ids, allowed): the sorted union of the sentences' target ids (V',), for the output layer, and which of
        them each sentence may choose (B, V') bool, so that a sentence's translation does not depend on the
        sentences it is batched with (a batch's make-up depends on how far a reader thread got)."""
        known = len(self.translations)
        sources = list(sources)
        mine = np.zeros((len(sources), self.vocab_size), dtype=bool)  # each sentence's pieces, over the vocabulary
        mine[:, self.base] = True
        for n, ids in enumerate(sources):
            for i in ids:
                if i < known:
                    mine[n, self.translations[i]] = True
        union = np.flatnonzero(mine.any(axis=0)) if sources else np.unique(self.base)
        return torch.from_numpy(union).to(device), torch.from_numpy(mine[:, union]).to(device)


def _table_columns(
    raw: bytes, src_ids: dict[str, int], tgt_ids: dict[str, int]
) -> tuple[np.ndarray, np.ndarray] | None:
    """The source id (-1 on a frequency line) and target id of every line of a table, parsed column-wise (a table
    has hundreds of thousands of lines: 0.4 s instead of 0.65 s for Multi30k's 400,000); None unless every line is well
    formed: UTF-8 without BOM, NUL or CR, each line ending in "\\n", three fields, known pieces, a finite
    non-negative number."""
    if b"\x00" in raw or b"\r" in raw or raw.startswith(BOM.encode()) or (raw and not raw.endswith(b"\n")):
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    lines = text.count("\n")
    codes = np.frombuffer(raw, dtype=np.uint8)
    tab_line = np.searchsorted(np.flatnonzero(codes == ord("\n")), np.flatnonzero(codes == ord("\t")))
    if len(tab_line) != 2 * lines or (lines and not (np.bincount(tab_line, minlength=lines) == 2).all()):
        return None  # some line has not exactly two tabs
    fields = text.replace("\n", "\t").split("\t")[: 3 * lines]
    src_or_frequency = {**src_ids, "": -1}  # an empty source field: a frequency line
    # map over dict.get: C calls, no Python frame per line (0.07 s instead of 0.1 s a column)
    src = np.fromiter(map(src_or_frequency.get, fields[0::3], itertools.repeat(-2)), np.int64, lines)
    tgt = np.fromiter(map(tgt_ids.get, fields[1::3], itertools.repeat(-1)), np.int64, lines)
    try:
        values = np.fromiter(map(float, fields[2::3]), np.float64, lines)
    except ValueError:
        return None
    if (src == -2).any() or (tgt == -1).any() or not (np.isfinite(values) & (values >= 0)).all():
        return None
    return src, tgt


def _entries(src: np.ndarray, tgt: np.ndarray, src_vocab: int, per_word: int) -> tuple[list[np.ndarray], np.ndarray]:
    """Each source id's first `per_word` translations (in file order: best first), and the frequent target ids."""
    translated = src >= 0
    order = np.argsort(src[translated], kind="stable")
    by_source, sources = tgt[translated][order], src[translated][order]
    starts = np.searchsorted(sources, np.arange(src_vocab + 1))
    return [by_source[a : min(b, a + per_word)] for a, b in zip(starts[:-1], starts[1:], strict=True)], tgt[~translated]


def _checked_entries(
    path: str, lines: Iterable[tuple[str, str]], src_ids: dict[str, int], tgt_ids: dict[str, int]
) -> tuple[list[list[int]], list[int]]:
    """The table's `lines` (`read_lines`'s) one by one, each checked: the first bad one is an `InputError` naming
    it."""
    translations: list[list[int]] = [[] for _ in range(len(src_ids))]
    frequent: list[int] = []
    for number, (text, _) in enumerate(lines, start=1):
        fields = text.split("\t")
        if len(fields) != 3:
            raise InputError(path=path, line=number, message=f"expected 3 tab-separated fields, found {len(fields)}")
        source, target, value = fields
        if target not in tgt_ids:
            raise InputError(
                path=path, line=number, message=f"target piece {target!r} is not in the model's vocabulary"
            )
        try:
            number_value = float(value)
        except ValueError:
            number_value = math.nan
        if not math.isfinite(number_value) or number_value < 0:
            raise InputError(path=path, line=number, message=f"{value!r} is not a probability or a count")
        if not source:
            frequent.append(tgt_ids[target])
        elif source not in src_ids:
            raise InputError(
                path=path, line=number, message=f"source piece {source!r} is not in the model's vocabulary"
            )
        else:
            translations[src_ids[source]].append(tgt_ids[target])
    return translations, frequent
