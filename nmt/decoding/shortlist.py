"""Vocabulary shortlists for decoding (Marian's lexical shortlist; Junczys-Dowmunt et al. 2018, AmuNMT).

Most of a decoding step's output layer goes to target pieces that cannot occur in this batch's translations. A
shortlist computes the output layer, its softmax and the top-k only over

    the `frequent` most frequent target pieces  ∪  the `per_word` best translations of each source piece
    of the batch  ∪  {EOS},

computed once for a batch, while each sentence chooses among its own part of it (its pieces' translations, the
frequent pieces, EOS), renormalised over that, so that its translation does not depend on its batch. The "best
translations" are ranked by a lexical translation table p(t | s) estimated on the training corpus
with IBM Model 1 (Brown et al. 1993; five EM iterations, a NULL source word to absorb what no source piece
explains). The probabilities are renormalised over the shortlist, so scores printed under one are not exact
log-probabilities: the scoring commands never use one.

The table is a text file (``nmt shortlist`` writes it), one entry per line, tab-separated, pieces as
SentencePiece writes them, so it can be read, filtered or built by another tool:

    SOURCE_PIECE  TARGET_PIECE  p(target | source)     the best translations of each source piece, best first
    (empty)       TARGET_PIECE  count                   the target pieces by corpus frequency, most frequent first
"""

from __future__ import annotations

import io
import itertools
import math
import os
from collections.abc import Iterable, Sequence

import numpy as np
import torch
from torch import Tensor

from nmt.data.encoding import source_ids, target_ids
from nmt.data.tokenizer import EOS, Tokenizer
from nmt.errors import InputError
from nmt.textio import BOM, atomic_output, decoded_lines, read_binary, read_lines

EM_ITERATIONS = 5
SHORTLIST_FIRST = 100
"""Default number of most frequent target pieces always in a shortlist."""
SHORTLIST_PER_WORD = 50
"""Default number of translations of each source piece in a shortlist."""


def lexical_table(
    src: Sequence[Sequence[int]], tgt: Sequence[Sequence[int]], src_vocab: int, tgt_vocab: int, *, keep: int
) -> tuple[list[list[tuple[int, float]]], np.ndarray]:
    """IBM Model 1 p(t | s) from sentence pairs of piece ids (no EOS). Returns, for each source id, its `keep`
    most probable target ids with their probabilities (best first), and the target ids' corpus counts (V_tgt,).

    Vectorised over every (source piece, target piece) link of every pair at once: an EM iteration is a gather,
    two bincounts and a division over the links."""
    null = src_vocab  # the NULL word, one more source id, present in every sentence
    link_src, link_tgt, link_word = [], [], []  # per link: its source id, target id and target occurrence
    occurrence = 0
    for s, t in zip(src, tgt, strict=True):
        if not t:
            continue
        s_ids = np.append(np.asarray(s, dtype=np.int64), null)
        t_ids = np.asarray(t, dtype=np.int64)
        link_src.append(np.tile(s_ids, len(t_ids)))
        link_tgt.append(np.repeat(t_ids, len(s_ids)))
        link_word.append(np.repeat(np.arange(occurrence, occurrence + len(t_ids)), len(s_ids)))
        occurrence += len(t_ids)
    counts = np.bincount(np.concatenate([np.asarray(t, dtype=np.int64) for t in tgt] or [np.zeros(0, np.int64)]),
                         minlength=tgt_vocab)  # fmt: skip
    if not link_src:
        return [[] for _ in range(src_vocab)], counts
    pair_key = np.concatenate(link_src) * tgt_vocab + np.concatenate(link_tgt)
    word = np.concatenate(link_word)
    pairs, link_pair = np.unique(pair_key, return_inverse=True)  # the distinct (s, t) and each link's
    pair_src = pairs // tgt_vocab
    prob = np.ones(len(pairs))  # p(t | s), uniform to start
    for _ in range(EM_ITERATIONS):
        p = prob[link_pair]
        posterior = p / np.bincount(word, weights=p, minlength=occurrence)[word]  # E: which s produced this t
        expected = np.bincount(link_pair, weights=posterior, minlength=len(pairs))
        prob = expected / np.bincount(pair_src, weights=expected, minlength=src_vocab + 1)[pair_src]  # M
    order = np.lexsort((-prob, pair_src))  # by source id, then most probable first
    best: list[list[tuple[int, float]]] = [[] for _ in range(src_vocab)]
    for i in order:
        s = int(pair_src[i])
        if s < src_vocab and len(best[s]) < keep:
            best[s].append((int(pairs[i] % tgt_vocab), float(prob[i])))
    return best, counts


def write_table(
    path: str,
    tokenizer: Tokenizer,
    best: Sequence[Sequence[tuple[int, float]]],
    counts: np.ndarray,
    *,
    inputs: Iterable[str] = (),
) -> None:
    """The table in the text format of the module docstring, written atomically."""
    src_pieces = tokenizer.src_pieces(range(len(best)))
    tgt_pieces = tokenizer.tgt_pieces(range(len(counts)))
    with atomic_output(path, inputs=inputs) as out:
        for s, entries in enumerate(best):
            out.writelines(f"{src_pieces[s]}\t{tgt_pieces[t]}\t{p:.6g}\n" for t, p in entries)
        for t in np.argsort(-counts, kind="stable"):
            if counts[t] > 0:
                out.write(f"\t{tgt_pieces[t]}\t{int(counts[t])}\n")


class Shortlist:
    """The target pieces a batch may produce: `frequent` most frequent ∪ `per_word` best per source piece ∪ EOS."""

    def __init__(self, translations: Sequence[Sequence[int]], frequent: Sequence[int], *, per_word: int,
                 first: int, vocab_size: int) -> None:  # fmt: skip
        self.vocab_size, self.per_word, self.first = vocab_size, per_word, first
        self.translations = [np.asarray(t[:per_word], dtype=np.int64) for t in translations]
        self.base = np.asarray([EOS, *frequent[:first]], dtype=np.int64)

    @classmethod
    def read(cls, path: str, tokenizer: Tokenizer, *, first: int, per_word: int) -> Shortlist:
        """Read a table written by `write_table` (or by hand in its format) for the model of `tokenizer`; a line
        that is not three fields, a piece the model does not know, or a bad number is an `InputError` naming the
        line."""
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

    @classmethod
    def everything(cls, vocab_size: int) -> Shortlist:
        """A shortlist of the whole vocabulary: it changes nothing (a check of the mechanism)."""
        return cls([], range(vocab_size), per_word=0, first=vocab_size, vocab_size=vocab_size)

    def ids(self, sources: Iterable[Sequence[int]], device: torch.device | str = "cpu") -> Tensor:
        """The sorted target ids allowed for a batch of source sentences (piece ids): the union of theirs."""
        return self.for_batch(sources, device)[0]

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


def corpus_pairs(source: str, target: str) -> tuple[list[str], list[str]]:
    """The lines of a parallel corpus (plain or gzip'd), checked to have as many lines on each side."""
    src = [text for text, _ in read_lines(source)]
    tgt = [text for text, _ in read_lines(target)]
    if len(src) != len(tgt):
        shorter = source if len(src) < len(tgt) else target
        raise InputError(path=shorter, message=f"{len(src)} source lines but {len(tgt)} target lines")
    return src, tgt


def build_table(path: str, tokenizer: Tokenizer, source: str, target: str, *, keep: int) -> int:
    """``nmt shortlist``: the lexical table of corpus `source`/`target` tokenized with `tokenizer`, to `path`.
    Returns the number of sentence pairs read."""
    src_lines, tgt_lines = corpus_pairs(source, target)
    src = [ids[:-1] for ids in source_ids(tokenizer, src_lines)]  # without EOS
    tgt = target_ids(tokenizer, tgt_lines)
    best, counts = lexical_table(src, tgt, tokenizer.src_vocab_size, tokenizer.tgt_vocab_size, keep=keep)
    write_table(path, tokenizer, best, counts, inputs=[os.fspath(source), os.fspath(target)])
    return len(src_lines)
