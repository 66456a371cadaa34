"""The lexical translation table of a parallel corpus: p(target piece | source piece) estimated with IBM
Model 1 (Brown et al. 1993; five EM iterations, a NULL source word to absorb what no source piece explains), and
every target piece's count. ``nmt shortlist`` writes it, in the text format of ``nmt.decoding.shortlist``, which
draws a decoding shortlist from it."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple

import numpy as np

from nmt.data.encoding import is_blank, source_ids, target_ids
from nmt.data.tokenizer import Tokenizer
from nmt.errors import InputError
from nmt.textio import atomic_output, read_lines

EM_ITERATIONS = 5


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


def corpus_pairs(source: str, target: str) -> tuple[list[str], list[str]]:
    """The lines of a parallel corpus (plain or gzip'd), checked to have as many lines on each side and at least
    one pair with text on both: a table of nothing would be refused later by every ``--shortlist``."""
    src = [text for text, _ in read_lines(source)]
    tgt = [text for text, _ in read_lines(target)]
    if len(src) != len(tgt):
        shorter = source if len(src) < len(tgt) else target
        raise InputError(path=shorter, message=f"{len(src)} source lines but {len(tgt)} target lines")
    if not any(not is_blank(s) and not is_blank(t) for s, t in zip(src, tgt, strict=True)):
        what = "is empty" if not src else "has no sentence pair with text on both sides"
        raise InputError(path=source, message=f"{what}: there is nothing to estimate a lexical table from")
    return src, tgt


class Built(NamedTuple):
    """What `build_table` did: the sentence pairs read, and those skipped for a side over `max_tokens` pieces."""

    pairs: int
    skipped: int


def build_table(
    path: str,
    tokenizer: Tokenizer,
    src_lines: Sequence[str],
    tgt_lines: Sequence[str],
    *,
    keep: int,
    max_tokens: int,
    source_name: str = "<source>",
    inputs: Iterable[str] = (),
) -> Built:
    """``nmt shortlist``: the lexical table of the corpus `src_lines`/`tgt_lines` (`corpus_pairs`) tokenized with
    `tokenizer`, written to `path`. A pair with a side over `max_tokens` pieces is skipped, as training drops it:
    IBM Model 1 links every source piece of a pair to every target piece, so one very long pair would cost memory
    in proportion to the square of its length rather than to the corpus. A corpus whose pairs are all skipped is
    an `InputError` naming `source_name`."""
    src = [ids[:-1] for ids in source_ids(tokenizer, src_lines)]  # without EOS
    tgt = target_ids(tokenizer, tgt_lines)
    kept = [i for i, (s, t) in enumerate(zip(src, tgt, strict=True)) if len(s) <= max_tokens and len(t) <= max_tokens]
    if not any(src[i] and tgt[i] for i in kept):
        raise InputError(
            path=source_name,
            message=f"every sentence pair with text on both sides has a side over {max_tokens} pieces "
            "(raise --max-tokens)",
        )
    src, tgt = [src[i] for i in kept], [tgt[i] for i in kept]
    best, counts = lexical_table(src, tgt, tokenizer.src_vocab_size, tokenizer.tgt_vocab_size, keep=keep)
    write_table(path, tokenizer, best, counts, inputs=inputs)
    return Built(pairs=len(src_lines), skipped=len(src_lines) - len(kept))
