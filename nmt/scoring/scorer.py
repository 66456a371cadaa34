"""Teacher-forced scoring of (input, output) text pairs, in length-sorted batches within a window.

The score of a pair is the model's log-probability of the whole output given the input,

    log p(y | x) = Σ_{t=1}^{T+1} log p(y_t | y_<t, x),   y_{T+1} = EOS,

with no length normalisation (Cho et al. 2014 §3.1 add p(target phrase | source phrase) to the phrase
table as it is). It is computed from ``model.teacher_forced`` (all positions at once), the same function
training minimises.

A pair's score does not depend on the pairs it is batched with, bit for bit, not only mathematically. The
kernels round differently when a tensor's shape changes, and a batch's shapes depend on its pairs:

- source padding changes the length of the attention's sums over the source (softmax, context): a batch
  holds pairs of one source length only, so the source is never padded;
- BLAS computes a product of a few rows (one row: matrix-vector code) with other kernels than one of many
  rows, and an elementwise function (tanh, sigmoid, exp) computes the last elements of a tensor, past its
  last full group of SIMD vectors, with scalar code that rounds differently: a batch is completed to a
  multiple of `ROW_BLOCK` rows with filler rows (its first input, an empty output; not scored), so every
  tensor of the batch holds whole vectors of rows and no pair ever falls in a tail; the output layer,
  likewise, runs on a multiple of `ROW_BLOCK` positions;
- target padding only adds positions after a pair's last one, which the decoder never looks back from (and
  mostly skips: a batch's runs come longest first, and each block of ROW_BLOCK rows stops at its longest target,
  so that a step's row count stays a multiple of ROW_BLOCK, ``nmt.model.positions``); the attention's energies are
  a row-wise sum here (``teacher_forced(…, batch_invariant=True)``); the log-probabilities are summed in float64,
  per pair.

So a pair scored alone, among 1,000 others, in any window, at any place, gets the same float64 value and
prints the same digits: tested on the CPU (MKL, AVX-512) with one thread for models of 16 to 1000 units, both
architectures and both cells, and with two threads for small ones. Not guaranteed beyond: with many threads,
torch and BLAS may split a tensor among them at places that depend on its size, and a GPU library chooses its
kernels by shape, so there the last bit could still depend on the batch (``--threads 1`` is the safe choice).

Pairs the model cannot read as they are:

- an empty side is scored as the empty string: an empty input is the source "EOS", an empty output scores
  p(EOS | x). Both are flagged ``empty``.
- a side longer than `ScoringConfig.max_len` pieces (EOS included) is, under ``too_long="truncate"``
  (default), cut to its first max_len − 1 pieces followed by EOS, i.e. scored as if the phrase ended there;
  under ``too_long="floor"`` the pair is not run and gets the log-probability `ScoringConfig.floor`.
  Both are flagged ``truncated``.

Unfaithful words (``count_unk``), the word-penalty feature of Cho et al. 2014 (footnote 3): the number of
words of the output that contain a piece the vocabulary cannot represent, i.e. ``<unk>`` (which decodes to
⁇) or a byte-fallback piece ``<0xNN>``. A word is a run of pieces that starts at a piece beginning with
"▁" (SentencePiece's word boundary).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np
import torch

from nmt import limits
from nmt.data.batch import collate
from nmt.data.encoding import cut, is_blank, source_ids, target_ids
from nmt.data.tokenizer import EOS, PAD, Tokenizer
from nmt.decoding.search import select_rows

ROW_BLOCK = 32
"""Batches (and output-layer chunks) have a multiple of this many rows: at least the rows for which BLAS uses its
many-row kernels, and a whole number of SIMD vectors (16 float32 with AVX-512, twice unrolled) whatever the row
width, so that no pair lands in a tensor's scalar tail. See the module docstring."""
_BYTE_PIECE = re.compile(r"<0x[0-9A-Fa-f]{2}>")


@dataclass
class ScoringConfig:
    """How pairs are batched and what happens to pairs the model cannot read as they are."""

    batch_tokens: int = 8000
    """Padded input + output pieces per batch; the number of pairs per batch adapts to their lengths (a multiple
    of `ROW_BLOCK`, and at least `ROW_BLOCK` pairs even if they hold more pieces)."""
    window: int = 20000
    """Pairs read, sorted by length, scored and put back in order at a time (this bounds memory)."""
    max_len: int = 256
    """Pieces per side, EOS included, given to the model; longer sides follow `too_long`."""
    too_long: Literal["truncate", "floor"] = "truncate"
    """truncate: score the first max_len pieces; floor: give the pair the log-probability `floor`."""
    floor: float = -100.0
    """Log-probability of a pair with an over-long side under too_long='floor' (Moses' own floor is -100)."""
    logits_elements: int = 1 << 22
    """Logits computed at once (positions × vocabulary): bounds the memory of the (N, V) projection."""

    def __post_init__(self) -> None:
        """The ranges of `nmt score`'s options (`nmt.limits`): the API refuses what the CLI refuses."""
        limits.BATCH_TOKENS.check(self.batch_tokens, "batch_tokens")
        limits.WINDOW.check(self.window, "window")
        limits.SCORED_PIECES.check(self.max_len, "max_len")
        limits.LOG_PROBABILITY.check(self.floor, "floor")
        if self.too_long not in ("truncate", "floor"):
            raise ValueError(f"too_long must be truncate or floor, got {self.too_long!r}")
        if self.logits_elements < 1:
            raise ValueError(f"logits_elements must be at least 1, got {self.logits_elements}")


class PairScores(NamedTuple):
    """Scores of N pairs, in the order they were given."""

    logprob: np.ndarray  # (N,) float64: log p(output | input), EOS included
    n_tokens: np.ndarray  # (N,) int64: output pieces scored, EOS included
    n_unk: np.ndarray  # (N,) int64: unfaithful output words (zeros unless count_unk)
    truncated: np.ndarray  # (N,) bool: a side was longer than max_len
    empty: np.ndarray  # (N,) bool: a side was empty


class Prepared(NamedTuple):
    """Pairs tokenized, truncated and grouped into runs and length-sorted batches of runs (no tensors yet).

    A run is one pass of the decoder over a (source, target) that is not a prefix of another target of the same
    source: it also scores every pair whose target is one of its prefixes (see `PairScorer`)."""

    src: list[list[int]]  # model input ids, EOS included
    tgt: list[list[int]]  # model output ids, without BOS/EOS
    runs: list[tuple[list[int], list[int]]]  # (source ids, target ids) of each run
    run_of: np.ndarray  # (N,) the run that scores each pair (-1: floored)
    batches: list[np.ndarray]  # run indices, one array per batch: one source length, similar target lengths
    floored: np.ndarray  # (N,) bool: not run, scored `floor`
    n_unk: np.ndarray
    truncated: np.ndarray
    empty: np.ndarray


class PairScorer:
    """Scores text pairs with a model: ``PairScorer(model, tokenizer).score(inputs, outputs)`` (or
    ``nmt.Translator.score``).

    `inputs` go to the encoder (the model's source side), `outputs` are scored as the decoder's target; a
    caller scoring in the reverse direction swaps them. ``prepare`` (tokenize, sort, batch: plain Python)
    and ``run`` (the network) are separate so that the next window can be prepared while this one runs.

    Work shared between pairs is done once. A phrase table lists many targets for each source, and many targets
    are prefixes of others ("as proof", "as proof that"): the decoder's distribution at position t depends only on
    the source and the first t target pieces, so the pass over the longest target scores each of its prefixes too
    (their pieces, then EOS where they end), and each distinct source of a batch is encoded once. The values are
    the same, bit for bit, as those of each pair run alone (every row is computed by the same row-invariant kernels;
    the sums run in the same order): on the shared de→en table this removes about a quarter of the decoder's
    positions and half of the encoder's.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Tokenizer,
        *,
        config: ScoringConfig | None = None,
        count_unk: bool = False,
    ) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.config = config or ScoringConfig()
        self.device = next(self.model.parameters()).device
        self.unfaithful: list[bool] | None = None  # per target id: <unk> or a byte-fallback piece
        self.word_start: list[bool] | None = None  # per target id: the piece starts a word ("▁…")
        if count_unk:
            pieces = self.tokenizer.tgt_pieces(range(self.tokenizer.tgt_vocab_size))
            self.unfaithful = [self.tokenizer.is_unk_piece(p) or bool(_BYTE_PIECE.fullmatch(p)) for p in pieces]
            self.word_start = [p.startswith("\u2581") for p in pieces]

    def score(self, inputs: Sequence[str], outputs: Sequence[str]) -> PairScores:
        """Scores of the pairs (inputs[i], outputs[i]): two sequences of str of the same length."""
        return self.run(self.prepare(limits.texts(inputs, "inputs"), limits.texts(outputs, "outputs")))

    # -- preparation (no torch) ----------------------------------------------------------------------------
    def prepare(self, inputs: Sequence[str], outputs: Sequence[str]) -> Prepared:
        if len(inputs) != len(outputs):
            raise ValueError(f"{len(inputs)} inputs but {len(outputs)} outputs")
        cfg = self.config
        src, tgt = source_ids(self.tokenizer, inputs), target_ids(self.tokenizer, outputs)
        N = len(src)
        empty = np.fromiter((is_blank(a) or is_blank(b) for a, b in zip(inputs, outputs, strict=True)), bool, count=N)
        n_unk = np.zeros(N, dtype=np.int64)
        if self.unfaithful is not None:
            n_unk[:] = [self.count_unfaithful_words(ids) for ids in tgt]
        truncated = np.zeros(N, dtype=bool)
        floored = np.zeros(N, dtype=bool)
        for i in range(N):
            if len(src[i]) > cfg.max_len or len(tgt[i]) + 1 > cfg.max_len:
                truncated[i] = True
                if cfg.too_long == "floor":
                    floored[i] = True
                else:
                    src[i] = cut(src[i], cfg.max_len - 1)  # max_len counts EOS
                    tgt[i] = tgt[i][: cfg.max_len - 1]
        runs, run_of = _runs(src, tgt, floored)
        return Prepared(src, tgt, runs, run_of, self._batches(runs), floored, n_unk, truncated, empty)

    def count_unfaithful_words(self, ids: Sequence[int]) -> int:
        """Words of an output (ids without BOS/EOS) holding an <unk> or byte-fallback piece."""
        assert self.unfaithful is not None and self.word_start is not None
        count, word_counted = 0, False
        for i in ids:
            if self.word_start[i]:
                word_counted = False
            if self.unfaithful[i] and not word_counted:
                count, word_counted = count + 1, True
        return count

    def _batches(self, runs: list[tuple[list[int], list[int]]]) -> list[np.ndarray]:
        """Run indices sorted by (input length, output length), cut so that every batch has one input length S (no
        input padding: see the module docstring) and B · (S + T_max) ≤ batch_tokens, B a multiple of ROW_BLOCK
        (at least ROW_BLOCK), so that mostly the last batch of an input length needs filler rows (`_score_runs`)."""
        order = sorted(range(len(runs)), key=lambda r: (len(runs[r][0]), len(runs[r][1])))
        batches, current, t_max = [], [], 0
        for r in order:
            s, t = len(runs[r][0]), max(t_max, len(runs[r][1]) + 1)
            rows = max(ROW_BLOCK, self.config.batch_tokens // (s + t) // ROW_BLOCK * ROW_BLOCK)
            if current and (s != len(runs[current[0]][0]) or len(current) + 1 > rows):
                batches.append(np.array(current[::-1]))
                current, t = [], len(runs[r][1]) + 1
            current.append(r)
            t_max = t
        if current:
            batches.append(np.array(current[::-1]))
        return batches  # each batch's runs longest first: the decoder skips each block's padding (`_score_runs`)

    # -- the network ---------------------------------------------------------------------------------------
    @torch.inference_mode()
    def run(self, prepared: Prepared) -> PairScores:
        N = len(prepared.src)
        logprob = np.where(prepared.floored, self.config.floor, 0.0)
        scored = np.flatnonzero(prepared.run_of >= 0)
        batch_of_run = np.empty(len(prepared.runs), dtype=np.int64)
        row_of_run = np.empty(len(prepared.runs), dtype=np.int64)
        for b, index in enumerate(prepared.batches):
            batch_of_run[index], row_of_run[index] = b, np.arange(len(index))
        pairs_by_batch = _group(scored, batch_of_run[prepared.run_of[scored]], len(prepared.batches))
        for index, pairs in zip(prepared.batches, pairs_by_batch, strict=True):
            excl_sums, eos_lp = self._score_runs([prepared.runs[r] for r in index])
            rows = torch.from_numpy(row_of_run[prepared.run_of[pairs]])
            ends = torch.tensor([len(prepared.tgt[i]) for i in pairs], dtype=torch.long)
            # Σ_{t<L} log p(y_t) (summed in order, float64) + log p(EOS | y_<L): the pair ends at its L-th position
            logprob[pairs] = (excl_sums[rows, ends] + eos_lp[rows, ends].double()).numpy()
        n_tokens = np.fromiter((len(t) + 1 for t in prepared.tgt), dtype=np.int64, count=N)
        return PairScores(logprob, n_tokens, prepared.n_unk, prepared.truncated, prepared.empty)

    def _score_runs(self, runs: list[tuple[list[int], list[int]]]) -> tuple[torch.Tensor, torch.Tensor]:
        """The runs of one batch (one source length) through the model. Returns, on the CPU, for each run and
        target position t: the float64 sum of log p(y_u | y_<u, x) over u < t (B, T + 1), summed in order, and
        log p(EOS | y_<t, x) (B, T) in float32."""
        n = len(runs)
        sources = sorted({tuple(s) for s, _ in runs})  # each distinct source encoded once
        where = {s: i for i, s in enumerate(sources)}
        source_of = [where[tuple(s)] for s, _ in runs]
        tgt_ids = [t for _, t in runs]
        # rows that complete the batches to whole blocks: the first source, and an empty output
        sources += [sources[0]] * (-len(sources) % ROW_BLOCK)
        source_of += [0] * (-n % ROW_BLOCK)
        tgt_ids += [[]] * (-n % ROW_BLOCK)
        src_t = torch.tensor(sources, dtype=torch.long, device=self.device)
        lengths = torch.full((len(sources),), src_t.shape[1], dtype=torch.long, device=self.device)
        batch = collate([([EOS], t) for t in tgt_ids], range(len(tgt_ids)))  # targets padded as in training
        tgt_in_t, tgt_out_t = (t.to(device=self.device, non_blocking=True) for t in (batch.tgt_in, batch.tgt_out))
        # the runs come longest first: each block of ROW_BLOCK rows runs for its longest target's positions, and
        # stops there (so a step's row count is still a multiple of ROW_BLOCK)
        block_lengths = (torch.tensor([len(t) + 1 for t in tgt_ids]).view(-1, ROW_BLOCK)[:, :1]).expand(-1, ROW_BLOCK)
        enc = select_rows(
            self.model.encode(src_t, lengths, for_steps=False), torch.tensor(source_of, device=self.device)
        )
        # the attention's energies as a row-wise sum (see the module docstring)
        features = self.model.teacher_forced(enc, tgt_in_t, block_lengths.flatten(), batch_invariant=True).features
        mask = tgt_out_t != PAD
        mask[n:] = False  # the filler rows' outputs are not scored
        features, gold = features[mask], tgt_out_t[mask]  # (P, units), (P,) every real position
        token_lp = torch.empty(gold.shape[0], dtype=torch.float32, device=self.device)
        eos_lp = torch.empty(gold.shape[0], dtype=torch.float32, device=self.device)
        step = max(1, self.config.logits_elements // (self.tokenizer.tgt_vocab_size * ROW_BLOCK)) * ROW_BLOCK
        for a in range(0, gold.shape[0], step):  # chunks of a multiple of ROW_BLOCK positions
            chunk = features[a : a + step]
            m = chunk.shape[0]
            if m % ROW_BLOCK:  # the last chunk: completed with copies of its first position, then dropped
                chunk = torch.cat([chunk, chunk[:1].expand(-m % ROW_BLOCK, -1)])
            logits = self.model.logits(chunk).float()[:m]  # (m, V)
            lse = logits.logsumexp(dim=-1)
            token_lp[a : a + m] = logits.gather(-1, gold[a : a + m].unsqueeze(-1)).squeeze(-1) - lse
            eos_lp[a : a + m] = logits[:, EOS] - lse
        T = tgt_out_t.shape[1]
        per_position = torch.zeros(len(tgt_ids), T, dtype=torch.float32, device=self.device)
        eos = torch.zeros_like(per_position)
        per_position[mask], eos[mask] = token_lp, eos_lp
        excl_sums = torch.zeros(n, T + 1, dtype=torch.float64, device=self.device)
        excl_sums[:, 1:] = per_position[:n].double().cumsum(dim=1)
        return excl_sums.cpu(), eos[:n].cpu()


def _runs(
    src: list[list[int]], tgt: list[list[int]], floored: np.ndarray
) -> tuple[list[tuple[list[int], list[int]]], np.ndarray]:
    """The runs that score the pairs: for each distinct source, its distinct targets that are not a prefix of a
    longer one of its targets. Returns them and, for each pair, its run (-1 for a floored pair)."""
    targets_of: dict[tuple[int, ...], dict[tuple[int, ...], int]] = {}
    for i in range(len(src)):
        if not floored[i]:
            targets_of.setdefault(tuple(src[i]), {}).setdefault(tuple(tgt[i]), -1)
    runs: list[tuple[list[int], list[int]]] = []
    for source, targets in targets_of.items():
        ordered = sorted(targets)  # a prefix sorts right before the targets that extend it
        cover = len(runs)
        for k in range(len(ordered) - 1, -1, -1):  # the last of a chain of prefixes is the run of all of them
            target = ordered[k]
            following = ordered[k + 1] if k + 1 < len(ordered) else None
            if following is None or following[: len(target)] != target:
                cover = len(runs)
                runs.append((list(source), list(target)))
            targets[target] = cover
    run_of = np.full(len(src), -1, dtype=np.int64)
    for i in range(len(src)):
        if not floored[i]:
            run_of[i] = targets_of[tuple(src[i])][tuple(tgt[i])]
    return runs, run_of


def _group(items: np.ndarray, keys: np.ndarray, n_groups: int) -> list[np.ndarray]:
    """`items` split by `keys` (0 ≤ key < n_groups), each group in the items' order."""
    order = np.argsort(keys, kind="stable")
    bounds = np.searchsorted(keys[order], np.arange(n_groups + 1))
    return [items[order[bounds[g] : bounds[g + 1]]] for g in range(n_groups)]
