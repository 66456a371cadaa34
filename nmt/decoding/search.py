"""Batched beam search over a ``SearchModel`` (``nmt.model.base``: encode / initial_state / step).

All sentences of a batch are searched together: N sentences × k beams are the N·k rows of one decoder
step. Each iteration of the loop in ``search`` is these steps:

1. expand  — (once, before the loop) encode, then copy the initial state to B·k rows (row = n·k + slot) with
             one ``index_select``. The encoder output keeps one row per sentence, which the sentence's k rows
             share (``SearchModel.step``): it is never reordered, it only loses the rows of sentences that are done;
2. score   — the score of every extension of every live hypothesis: log_prob + log p(y | ·), (N, k·V);
3. select  — each sentence's 2k best extensions (at most k of them end in EOS, so at least k go on);
4. retire  — extensions among the k best that end in EOS (all k best at the sentence's length limit) leave
             the beam as finished hypotheses;
5. reorder — the k best extensions that do not end in EOS are the new beam; the decoder state and the
             token/attention histories follow them with one ``index_select`` each;
6. drop    — a sentence is done at its length limit, when k of its hypotheses have finished, or when no
             live hypothesis can still beat its n-th best finished one; its rows leave the batch.

Scores. ``log_prob`` is the unnormalised log-probability Σ_t log p(y_t | y_<t, x) of the tokens
*including* EOS (a hypothesis cut at the length limit has no EOS term). Finished hypotheses are ranked by
``score = log_prob / lp(L)``, L = number of output tokens including EOS, with lp(L) = 1 (none), L^α
(length) or ((5 + L) / 6)^α (gnmt, Wu et al. 2016). All live hypotheses of a step have the same length,
so the beam itself is ranked by log_prob; normalisation decides between finished hypotheses and when to
stop.

Memory. A step holds (N·k, V) scores and (N·k, S, ·) attention energies: a batch whose N·k rows or
N·k·S source positions exceed ``MAX_ROWS`` / ``MAX_POSITIONS`` is searched in consecutive slices of sentences,
so a wide beam costs time, never memory beyond that bound, whatever the batch size.

Greedy search is k = 1. Nothing is masked: the search follows the model's distribution over its whole
vocabulary (a trained model gives PAD and BOS no mass: they are never targets), or, given ``vocab`` (a shortlist,
``nmt.decoding.shortlist``), over those target ids only: the output layer, its softmax and the top-k then cost
len(vocab)/V of theirs, and the distribution is renormalised over them.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Literal, NamedTuple, TypeVar

import torch
from torch import Tensor

from nmt import limits
from nmt.model.base import SearchModel

T = TypeVar("T")
NEG_INF = float("-inf")
MAX_ROWS = 4096
"""Beam rows (sentences × beam size) searched at once: a step's scores are (rows, V)."""
MAX_POSITIONS = 1 << 17
"""Source positions (beam rows × padded source length) attended to at once: a step's attention energies."""


@dataclass
class SearchConfig:
    """How to search (validation BLEU during training and the ``translate`` / ``evaluate`` commands)."""

    beam_size: int = 5
    """Beam width k (1 = greedy search)."""
    length_penalty: Literal["none", "length", "gnmt"] = "none"
    """Ranking of finished hypotheses: log_prob / lp(L) with lp = 1, L^alpha or ((5 + L) / 6)^alpha."""
    alpha: float = 1.0
    """Exponent of the length penalty (unused with 'none')."""
    max_length_a: float = 1.5
    """Hypotheses stop at max_length_a · |src| + max_length_b output tokens (|src| counts the source EOS)."""
    max_length_b: int = 10
    """See max_length_a."""
    n_best: int = 1
    """Hypotheses returned per sentence, best first (at most beam_size)."""

    def __post_init__(self) -> None:
        """The ranges of the command-line options (`nmt.limits`): the API refuses what the CLI refuses."""
        limits.BEAM_SIZE.check(self.beam_size, "beam_size")
        limits.N_BEST.check(self.n_best, "n_best")
        if self.n_best > self.beam_size:
            raise ValueError(
                f"n_best: {self.n_best} is more than beam_size {self.beam_size}: a beam of {self.beam_size} ends with "
                f"at most {self.beam_size} hypotheses (raise beam_size)"
            )
        if self.length_penalty not in ("none", "length", "gnmt"):
            raise ValueError(f"length_penalty must be none, length or gnmt, got {self.length_penalty!r}")
        limits.ALPHA.check(self.alpha, "alpha")
        limits.MAX_LENGTH_A.check(self.max_length_a, "max_length_a")
        limits.MAX_LENGTH_B.check(self.max_length_b, "max_length_b")
        if self.max_length_a == 0 and self.max_length_b < 2:  # the output limit a·|src| + b: room for a word and EOS
            raise ValueError(
                f"max_length_b: {self.max_length_b} with max_length_a 0 limits every translation to "
                f"{max(1, self.max_length_b)} piece(s), EOS included: nothing could be translated"
            )

    def penalty(self, length: int) -> float:
        """lp(L) for a hypothesis of L output tokens (EOS included)."""
        if self.length_penalty == "length":
            return float(length) ** self.alpha
        if self.length_penalty == "gnmt":
            return ((5.0 + length) / 6.0) ** self.alpha
        return 1.0

    def max_length(self, src_length: int) -> int:
        """Output length limit for a source of src_length tokens: ⌊a·|src| + b⌋, at least 1."""
        return max(1, int(self.max_length_a * src_length + self.max_length_b))


class Hypothesis(NamedTuple):
    """One result of the search for one sentence."""

    tokens: list[int]
    """Target ids, without BOS and EOS."""
    score: float
    """log_prob / lp(L): what the n-best list is sorted by."""
    log_prob: float
    """Σ log p(y_t | y_<t, x) over the tokens and the final EOS (unnormalised)."""
    complete: bool = True
    """False when the hypothesis was cut at the length limit (log_prob then has no EOS term)."""
    alpha: Tensor | None = None
    """(T, S) attention weights on the CPU, one row per output token including EOS, one column per source
    token including the source EOS; None for a model without attention."""


def select_rows(tree: T, index: Tensor) -> T:
    """Rows `index` (R,) of every tensor of a tuple, NamedTuple or nesting of them (an ensemble's); what is not a
    tensor (None, a flag: ``nmt.model.attention.Keys``) stays."""
    if isinstance(tree, Tensor):
        return tree.index_select(0, index)
    if not isinstance(tree, (tuple, list)):
        return tree
    items = [select_rows(item, index) for item in tree]  # type: ignore[attr-defined]
    return type(tree)(*items) if hasattr(tree, "_fields") else type(tree)(items)  # type: ignore[call-arg]


class _Beam(NamedTuple):
    """The live hypotheses of the N sentences still searched, k rows per sentence (row = n·k + slot)."""

    sentence: list[int]  # (N) index of each sentence in the caller's batch
    log_prob: Tensor  # (N, k) of each live hypothesis; -inf marks an empty slot
    tokens: Tensor  # (N·k, t) the words so far
    alpha: Tensor | None  # (N·k, t, S) the attention weights so far (None before the first step)


class _Candidates(NamedTuple):
    """Each sentence's 2k best extensions, best first."""

    log_prob: Tensor  # (N, 2k)
    row: Tensor  # (N, 2k) the beam row each one extends
    token: Tensor  # (N, 2k) the word it appends


class _Finished:
    """The finished hypotheses of every sentence of the batch, each list best first."""

    def __init__(self, batch_size: int, config: SearchConfig, src_lengths: list[int]) -> None:
        self.config, self.src_lengths = config, src_lengths
        self.max_len = [config.max_length(n) for n in src_lengths]
        self.hypotheses: list[list[Hypothesis]] = [[] for _ in range(batch_size)]
        self._neg_scores: list[list[float]] = [[] for _ in range(batch_size)]  # sorted keys for bisect

    def add(self, sentence: int, hypothesis: Hypothesis) -> None:
        at = bisect.bisect_right(self._neg_scores[sentence], -hypothesis.score)
        self._neg_scores[sentence].insert(at, -hypothesis.score)
        self.hypotheses[sentence].insert(at, hypothesis)

    def done(self, beam: _Beam, t: int) -> list[bool]:
        """Per live sentence after step t: at its length limit, k finished, or no live hypothesis can
        beat its n-th best finished one. log_prob only falls as words are added and lp(L) grows with L,
        so the most a live hypothesis can still reach is its log_prob now divided by lp(length limit)."""
        k, n = self.config.beam_size, self.config.n_best
        best_live = beam.log_prob.max(dim=-1).values.tolist()
        done = []
        for s, live in zip(beam.sentence, best_live, strict=True):
            found = self._neg_scores[s]
            nth_best = -found[n - 1] if len(found) >= n else NEG_INF
            bound = live / self.config.penalty(self.max_len[s])
            done.append(t + 1 >= self.max_len[s] or len(found) >= k or bound <= nth_best)
        return done

    def results(self) -> list[list[Hypothesis]]:
        return [h[: self.config.n_best] or [Hypothesis([], NEG_INF, NEG_INF, False)] for h in self.hypotheses]


@torch.inference_mode()
def search(
    model: SearchModel,
    src: Tensor,
    src_lengths: Tensor,
    config: SearchConfig,
    *,
    bos_id: int,
    eos_id: int,
    vocab: Tensor | None = None,
    allowed: Tensor | None = None,
) -> list[list[Hypothesis]]:
    """Beam search for a batch: src (B, S) long, padded; src_lengths (B,) (including the source EOS).

    ``model`` is a ``SearchModel`` (a ``Seq2Seq``, an ``Ensemble``). ``vocab``: the sorted target ids the search
    may choose from (EOS among them), or None for the whole vocabulary; ``allowed`` (B, len(vocab)) bool: which
    of them each sentence may choose (its distribution renormalised over those), or None for all.
    Returns, for each sentence, up to ``config.n_best`` hypotheses sorted by score, best first.
    """
    k = config.beam_size
    if vocab is not None and not bool((vocab == eos_id).any()):
        raise ValueError("a search vocabulary must contain EOS")
    if allowed is not None and bool(allowed.all()):
        allowed = None  # nothing to mask (a whole-vocabulary shortlist: the same bits as none)
    # stacked once per batch, not once a step; with per-sentence lists, the scores alone: _search normalises them
    weights = model.step_weights(vocab, normalised=allowed is None)
    per_slice = max(1, min(MAX_ROWS // k, MAX_POSITIONS // (k * max(1, src.shape[1]))))
    results: list[list[Hypothesis]] = []
    for a in range(0, src.shape[0], per_slice):  # memory stays that of one slice
        b = a + per_slice
        mask = None if allowed is None else allowed[a:b]
        results += _search(
            model, src[a:b], src_lengths[a:b], config, bos_id=bos_id, eos_id=eos_id, vocab=vocab, weights=weights,
            allowed=mask,
        )  # fmt: skip
    return results


def _search(
    model: SearchModel,
    src: Tensor,
    src_lengths: Tensor,
    config: SearchConfig,
    *,
    bos_id: int,
    eos_id: int,
    vocab: Tensor | None,
    weights: object,
    allowed: Tensor | None,
) -> list[list[Hypothesis]]:
    B, k, device = src.shape[0], config.beam_size, src.device
    finished = _Finished(B, config, src_lengths.tolist())
    if B == 0:
        return []

    # 1. expand: the initial state, once per beam slot; the encoder output stays one row per sentence
    enc = model.encode(src, src_lengths)
    rows = torch.arange(B, device=device).repeat_interleave(k)  # (B·k,) sentence of each row
    state = select_rows(model.initial_state(enc), rows)
    # where in `vocab` each sentence's own shortlist is; it loses rows with the encoder output
    own = None if allowed is None else _OwnPieces.of(allowed)
    beam = _Beam(list(range(B)), _first_beam(B, k, device), src.new_empty(B * k, 0), None)
    y_prev = torch.full((B * k,), bos_id, dtype=torch.long, device=device)

    for t in range(max(finished.max_len)):
        out = model.step(y_prev, state, enc, weights)
        N, V = len(beam.sentence), out.log_probs.shape[-1]
        log_probs = out.log_probs.view(N, k, V)
        if own is not None:  # each sentence's own shortlist (its columns only): its scores normalised over it
            V = own.position.shape[1]
            log_probs = log_probs.gather(2, own.position.unsqueeze(1).expand(N, k, V))
            log_probs = torch.log_softmax(log_probs.masked_fill(own.padding.unsqueeze(1), NEG_INF), dim=-1)
        # 2. score
        scores = (beam.log_prob.unsqueeze(-1) + log_probs).view(N, k * V)
        # 3. select
        cand = _best_candidates(scores, k, V)
        if own is not None:  # positions in a sentence's own list -> in the shortlist
            cand = cand._replace(token=own.position.gather(1, cand.token))
        if vocab is not None:  # positions in the shortlist -> target ids
            cand = cand._replace(token=vocab[cand.token])
        # 4. retire
        at_limit = [t + 1 >= finished.max_len[s] for s in beam.sentence]
        _retire(cand, beam, out.alpha, at_limit, t, eos_id, finished)
        # 5. reorder
        beam, rows = _advance(cand, beam, out.alpha, eos_id)
        # 6. drop
        done = finished.done(beam, t)
        if all(done):
            break
        if any(done):
            beam, rows, kept = _drop(beam, rows, done, k)
            enc = select_rows(enc, kept)
            own = None if own is None else _OwnPieces(own.position[kept], own.padding[kept])
        state = select_rows(out.state, rows)
        y_prev = beam.tokens[:, -1]
    return finished.results()


class _OwnPieces(NamedTuple):
    """Each sentence's own part of a batch's shortlist: the positions in it of the pieces the sentence may choose
    (N, L), sorted, padded to the longest (padding True where a row has no more). Choosing among those L columns
    rather than masking the others costs L/len(vocab) of the softmax and the top-k (Multi30k's sizes:
    docs/benchmarks.md)."""

    position: Tensor  # (N, L) long
    padding: Tensor  # (N, L) bool

    @classmethod
    def of(cls, allowed: Tensor) -> _OwnPieces:
        rank = allowed.cumsum(dim=1) - 1  # (N, V'): where each allowed piece goes in its row's list
        count = rank[:, -1:] + 1
        L = max(1, int(count.max()))
        position = torch.zeros(allowed.shape[0], L, dtype=torch.long, device=allowed.device)
        row, column = allowed.nonzero(as_tuple=True)
        position[row, rank[row, column]] = column
        return cls(position, torch.arange(L, device=allowed.device) >= count)


def _first_beam(B: int, k: int, device: torch.device) -> Tensor:
    """(B, k) log-probs of the initial beam: one empty hypothesis per sentence, k - 1 empty slots."""
    log_prob = torch.full((B, k), NEG_INF, device=device)
    log_prob[:, 0] = 0.0
    return log_prob


def _best_candidates(scores: Tensor, k: int, V: int) -> _Candidates:
    """scores (N, k·V) -> the 2k best (all k·V when fewer), with the row and the word of each."""
    log_prob, flat = scores.topk(min(2 * k, k * V), dim=-1)  # (N, 2k), sorted
    slot = torch.div(flat, V, rounding_mode="floor")
    base = torch.arange(scores.shape[0], device=scores.device).unsqueeze(-1) * k
    return _Candidates(log_prob, base + slot, flat - slot * V)


def _append(history: Tensor | None, rows: Tensor, new: Tensor) -> Tensor:
    """history (R, t, …) or None (t = 0); new (R', …) one value per row -> (len(rows), t + 1, …)."""
    step = new.index_select(0, rows).unsqueeze(1)
    return step if history is None else torch.cat([history.index_select(0, rows), step], dim=1)


def _retire(
    cand: _Candidates,
    beam: _Beam,
    alpha: Tensor | None,
    at_limit: list[bool],
    t: int,
    eos_id: int,
    finished: _Finished,
) -> None:
    """Move the k best extensions that end in EOS — all k best of a sentence at its length limit — to
    ``finished``. Each has t + 1 output tokens."""
    k = beam.log_prob.shape[1]
    top_lp, top_row, top_tok = cand.log_prob[:, :k], cand.row[:, :k], cand.token[:, :k]
    is_eos = top_tok == eos_id
    if any(at_limit):
        limit = torch.tensor(at_limit, device=is_eos.device).unsqueeze(-1)
        leaving = (is_eos | limit) & torch.isfinite(top_lp)
    else:
        leaving = is_eos & torch.isfinite(top_lp)
    n, slot = leaving.nonzero(as_tuple=True)  # one sync per step
    if n.numel() == 0:
        return
    rows = top_row[n, slot]
    tokens = torch.cat([beam.tokens.index_select(0, rows), top_tok[n, slot].unsqueeze(-1)], dim=-1)
    alphas = None if alpha is None else _append(beam.alpha, rows, alpha).cpu()  # (R, t + 1, S)
    log_probs = top_lp[n, slot].tolist()
    lp = finished.config.penalty(t + 1)
    for i, (sentence, toks, log_p, eos) in enumerate(
        zip(n.tolist(), tokens.tolist(), log_probs, is_eos[n, slot].tolist(), strict=True)
    ):
        s = beam.sentence[sentence]
        a = None if alphas is None else alphas[i, :, : finished.src_lengths[s]]
        finished.add(s, Hypothesis(toks[:-1] if eos else toks, log_p / lp, log_p, eos, a))


def _advance(cand: _Candidates, beam: _Beam, alpha: Tensor | None, eos_id: int) -> tuple[_Beam, Tensor]:
    """The k best extensions that do not end in EOS become the beam. Returns it and, for each new row,
    the previous row it continues (N·k,), to reorder the decoder state with."""
    k = beam.log_prob.shape[1]
    going_on = cand.log_prob.masked_fill(cand.token == eos_id, NEG_INF)
    log_prob, j = going_on.topk(k, dim=-1)  # (N, k); candidates are sorted, so the first k that go on
    rows = cand.row.gather(1, j).view(-1)  # (N·k,)
    token = cand.token.gather(1, j).view(-1, 1)  # (N·k, 1)
    tokens = torch.cat([beam.tokens.index_select(0, rows), token], dim=-1)
    alphas = None if alpha is None else _append(beam.alpha, rows, alpha)
    return _Beam(beam.sentence, log_prob, tokens, alphas), rows


def _drop(beam: _Beam, rows: Tensor, done: list[bool], k: int) -> tuple[_Beam, Tensor, Tensor]:
    """Remove the sentences that are done. Returns the smaller beam, the state rows restricted to it, and
    the positions of the sentences that stay (for the encoder output)."""
    keep = [n for n, d in enumerate(done) if not d]
    kept = torch.tensor(keep, device=rows.device)
    stay = (kept.unsqueeze(-1) * k + torch.arange(k, device=rows.device)).view(-1)  # (N'·k,)
    alpha = None if beam.alpha is None else beam.alpha.index_select(0, stay)
    smaller = _Beam([beam.sentence[n] for n in keep], beam.log_prob[kept], beam.tokens.index_select(0, stay), alpha)
    return smaller, rows.index_select(0, stay), kept
