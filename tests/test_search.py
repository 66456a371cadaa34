"""Beam search against trusted references: an exhaustive search over every output sequence, an independent
greedy loop, teacher-forced scoring, a hand-checkable probability table, and batch invariance."""

from __future__ import annotations

import argparse
import importlib
import itertools
import math
import re
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from nmt import limits
from nmt.decoding import Ensemble, SearchConfig, check_same_vocabulary, search, select_rows
from nmt.errors import InputError
from nmt.model import StepOutput, build_model
from tests.factories import tiny_network

BOS, EOS = 2, 3  # nmt's fixed special ids (PAD 0, UNK 1)
MODELS = [("rnnsearch", "paper"), ("rnnencdec", "paper"), ("rnnencdec", "cudnn"), ("rnnsearch", "cudnn")]


def peaked_model(architecture: str, cell: str, *, seed: int = 0, tgt_vocab: int = 6) -> nn.Module:
    """A tiny random model whose output distributions are far from uniform (large weights), with EOS
    likely enough that hypotheses of every length compete."""
    torch.manual_seed(seed)
    sizes = dict(emb_dim=8, encoder_dim=6, decoder_dim=8, attention_dim=6, maxout_units=5)
    network = tiny_network(architecture, cell, **sizes, init_std=0.7, attention_init_std=0.7)
    model = build_model(network, src_vocab_size=9, tgt_vocab_size=tgt_vocab)
    with torch.no_grad():
        model.output.W_o.bias[EOS] = 1.5
    return model.eval()


def batch(*sentences: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded (B, S) source ids and their lengths."""
    S = max(len(s) for s in sentences)
    src = torch.tensor([s + [0] * (S - len(s)) for s in sentences])
    return src, torch.tensor([len(s) for s in sentences])


SOURCES = [[4, 5, 6, 7, EOS], [8, 4, EOS], [5, EOS]]


@torch.no_grad()
def teacher_forced_log_probs(model, src: list[int], outputs: list[tuple[list[int], bool]]):
    """log p(y | x) of each (tokens, complete) by teacher forcing: the sum over the tokens, plus EOS when
    complete. Returns log-probs (n,) and attention weights (one (T, S) tensor or None per output)."""
    result, alphas = torch.empty(len(outputs)), [None] * len(outputs)
    by_length: dict[int, list[int]] = {}
    for i, (tokens, complete) in enumerate(outputs):
        by_length.setdefault(len(tokens) + complete, []).append(i)
    x, x_len = batch(src)
    enc = model.encode(x, x_len)
    for members in by_length.values():
        tgt = torch.tensor([outputs[i][0] + [EOS] * outputs[i][1] for i in members])  # (n, T)
        tgt_in = torch.cat([torch.full((len(members), 1), BOS), tgt[:, :-1]], dim=1)
        tf = model.teacher_forced(select_rows(enc, torch.zeros(len(members), dtype=torch.long)), tgt_in)
        lp = torch.log_softmax(model.logits(tf.features).float(), dim=-1).gather(-1, tgt.unsqueeze(-1))
        result[members] = lp.squeeze(-1).sum(-1)
        for row, i in enumerate(members):
            alphas[i] = None if tf.alpha is None else tf.alpha[row]
    return result, alphas


def all_outputs(vocab: int, max_len: int) -> list[tuple[list[int], bool]]:
    """Every sequence search can return: words then EOS within max_len tokens, or max_len words (cut)."""
    words = [w for w in range(vocab) if w != EOS]
    ended = [(list(p), True) for n in range(max_len) for p in itertools.product(words, repeat=n)]
    return ended + [(list(p), False) for p in itertools.product(words, repeat=max_len)]


def exhaustive(model, src: list[int], config: SearchConfig, vocab: int):
    """All outputs with (score, log_prob), best first."""
    outputs = all_outputs(vocab, config.max_length(len(src)))
    log_probs, _ = teacher_forced_log_probs(model, src, outputs)
    scored = [
        (lp / config.penalty(len(tokens) + complete), lp, tokens)
        for (tokens, complete), lp in zip(outputs, log_probs.tolist(), strict=True)
    ]
    return sorted(scored, key=lambda x: -x[0])


@pytest.mark.parametrize("architecture,cell", MODELS)
@pytest.mark.parametrize("penalty,alpha", [("none", 1.0), ("length", 1.0), ("gnmt", 2.0)])
def test_wide_beam_equals_exhaustive_search(architecture, cell, penalty, alpha, monkeypatch):
    V, L = 6, 4
    monkeypatch.setattr(limits.BEAM_SIZE, "high", V**L)  # wider than a user may ask for: every output of length L
    model = peaked_model(architecture, cell, seed=1)
    config = SearchConfig(
        beam_size=V**L, n_best=10, length_penalty=penalty, alpha=alpha, max_length_a=0.0, max_length_b=L
    )
    src, src_lengths = batch(*SOURCES)
    hyps = search(model, src, src_lengths, config, bos_id=BOS, eos_id=EOS)
    for sentence, found in zip(SOURCES, hyps, strict=True):
        expected = exhaustive(model, sentence, config, V)[:10]
        assert [h.tokens for h in found] == [tokens for _, _, tokens in expected]
        torch.testing.assert_close([h.score for h in found], [s for s, _, _ in expected], atol=1e-4, rtol=0)
        torch.testing.assert_close([h.log_prob for h in found], [lp for _, lp, _ in expected], atol=1e-4, rtol=0)


def test_wide_beam_returns_every_output_in_order(monkeypatch):
    V, L = 6, 3
    monkeypatch.setattr(limits.BEAM_SIZE, "high", V**L)
    monkeypatch.setattr(limits.N_BEST, "high", V**L)
    model = peaked_model("rnnsearch", "paper", seed=2)
    n_outputs = len(all_outputs(V, L))
    config = SearchConfig(beam_size=V**L, n_best=n_outputs, max_length_a=0.0, max_length_b=L)
    src, src_lengths = batch(SOURCES[0])
    (found,) = search(model, src, src_lengths, config, bos_id=BOS, eos_id=EOS)
    expected = exhaustive(model, SOURCES[0], config, V)
    assert [h.tokens for h in found] == [tokens for _, _, tokens in expected]
    assert sum(h.complete for h in found) == n_outputs - (V - 1) ** L  # all cut ones have L words


@torch.no_grad()
def greedy_loop(model, src: list[int], max_len: int) -> tuple[list[int], float]:
    """Greedy decoding written independently of the search module."""
    x, x_len = batch(src)
    enc = model.encode(x, x_len)
    state, y, tokens, total = model.initial_state(enc), torch.tensor([BOS]), [], 0.0
    for _ in range(max_len):
        out = model.step(y, state, enc)
        lp, y = out.log_probs.max(dim=-1)
        total += float(lp)
        state = out.state
        if int(y) == EOS:
            break
        tokens.append(int(y))
    return tokens, total


@pytest.mark.parametrize("architecture,cell", MODELS)
def test_beam_of_one_is_greedy(architecture, cell):
    model = peaked_model(architecture, cell, seed=3, tgt_vocab=20)
    with torch.no_grad():
        model.output.W_o.bias[EOS] = 0.0  # let some hypotheses run into the length limit
    config = SearchConfig(beam_size=1, max_length_a=1.0, max_length_b=3)
    src, src_lengths = batch(*SOURCES)
    hyps = search(model, src, src_lengths, config, bos_id=BOS, eos_id=EOS)
    for sentence, (found,) in zip(SOURCES, hyps, strict=True):
        tokens, log_prob = greedy_loop(model, sentence, config.max_length(len(sentence)))
        assert found.tokens == tokens
        assert found.log_prob == pytest.approx(log_prob, abs=1e-5)


@pytest.mark.parametrize("architecture,cell", MODELS)
def test_n_best_is_sorted_and_scored_by_teacher_forcing(architecture, cell):
    model = peaked_model(architecture, cell, seed=4, tgt_vocab=12)
    config = SearchConfig(beam_size=6, n_best=6, length_penalty="gnmt", alpha=0.6, max_length_a=1.0, max_length_b=2)
    src, src_lengths = batch(*SOURCES)
    hyps = search(model, src, src_lengths, config, bos_id=BOS, eos_id=EOS)
    for sentence, found in zip(SOURCES, hyps, strict=True):
        assert len(found) == 6
        scores = [h.score for h in found]
        assert scores == sorted(scores, reverse=True)
        assert len({tuple(h.tokens) for h in found}) == len(found)
        log_probs, alphas = teacher_forced_log_probs(model, sentence, [(h.tokens, h.complete) for h in found])
        torch.testing.assert_close(torch.tensor([h.log_prob for h in found]), log_probs, atol=1e-4, rtol=0)
        for h, alpha in zip(found, alphas, strict=True):
            assert h.score == pytest.approx(h.log_prob / config.penalty(len(h.tokens) + h.complete))
            if architecture == "rnnencdec":
                assert h.alpha is None
            else:
                assert h.alpha.shape == (len(h.tokens) + h.complete, len(sentence))
                torch.testing.assert_close(h.alpha, alpha, atol=1e-5, rtol=0)


@pytest.mark.parametrize("architecture,cell", MODELS)
def test_a_sentence_decodes_the_same_alone_or_in_a_batch(architecture, cell):
    model = peaked_model(architecture, cell, seed=5, tgt_vocab=15)
    config = SearchConfig(beam_size=4, n_best=3, length_penalty="length", max_length_a=1.0, max_length_b=3)
    src, src_lengths = batch(*SOURCES, SOURCES[1])
    together = search(model, src, src_lengths, config, bos_id=BOS, eos_id=EOS)
    for sentence, in_batch in zip(SOURCES + [SOURCES[1]], together, strict=True):
        (alone,) = search(model, *batch(sentence), config, bos_id=BOS, eos_id=EOS)
        assert [h.tokens for h in alone] == [h.tokens for h in in_batch]
        torch.testing.assert_close([h.score for h in alone], [h.score for h in in_batch], atol=1e-5, rtol=0)


def test_a_batch_beyond_the_memory_bound_is_searched_in_slices(monkeypatch):
    """Memory does not grow with the batch: beyond MAX_ROWS beam rows, search() takes the sentences a slice at a
    time, with the same results as all at once."""
    search_module = importlib.import_module("nmt.decoding.search")  # the package exports search(), the function

    model = peaked_model("rnnsearch", "paper", seed=5, tgt_vocab=15)
    config = SearchConfig(beam_size=4, n_best=3, length_penalty="length", max_length_a=1.0, max_length_b=3)
    src, src_lengths = batch(*SOURCES, SOURCES[1])
    together = search(model, src, src_lengths, config, bos_id=BOS, eos_id=EOS)
    slices, whole = [], search_module._search

    def one_slice(model, src, *args, **kwargs):
        slices.append(len(src))
        return whole(model, src, *args, **kwargs)

    monkeypatch.setattr(search_module, "_search", one_slice)
    monkeypatch.setattr(search_module, "MAX_ROWS", 8)  # 2 sentences of beam 4
    sliced = search(model, src, src_lengths, config, bos_id=BOS, eos_id=EOS)
    assert slices == [2, 2]
    for a, b in zip(together, sliced, strict=True):
        assert [h.tokens for h in a] == [h.tokens for h in b]
        torch.testing.assert_close([h.score for h in a], [h.score for h in b], atol=1e-5, rtol=0)


class TableModel(nn.Module):
    """A decoder scripted by a table: p(y_i) depends only on the position i (hand-checkable scores)."""

    pad_id = 0
    has_attention = False

    def __init__(self, table: list[dict[int, float]], vocab: int = 4) -> None:
        super().__init__()
        probs = torch.zeros(len(table), vocab)
        for i, row in enumerate(table):
            for word, p in row.items():
                probs[i, word] = p
        self.log_table = probs.log()  # (positions, V); log 0 = -inf

    def encode(self, src, src_lengths):
        return (src,)

    def initial_state(self, enc):
        return (torch.zeros(enc[0].shape[0], dtype=torch.long),)  # the position i

    def step_weights(self, ids=None, normalised=True):
        return None  # it has no weights

    def step(self, y_prev, state, enc, weights=None):
        (i,) = state
        return StepOutput(self.log_table[i.clamp(max=len(self.log_table) - 1)], (i + 1,), None)


A = 0  # the one word of TableModel besides EOS (its id is PAD's, which search does not treat specially)
# p(EOS) at positions 0..3 = 0.4, 0.3, 0.45, 1; word A otherwise. The four outputs and their log-probs:
TABLE = [{EOS: 0.4, A: 0.6}, {EOS: 0.3, A: 0.7}, {EOS: 0.45, A: 0.55}, {EOS: 1.0}]
OUTPUTS = {
    (): math.log(0.4),
    (A,): math.log(0.6 * 0.3),
    (A, A): math.log(0.6 * 0.7 * 0.45),
    (A, A, A): math.log(0.6 * 0.7 * 0.55 * 1.0),
}


@pytest.mark.parametrize(
    "penalty,alpha,lp",
    [
        ("none", 1.0, lambda L: 1.0),
        ("length", 1.0, lambda L: L),
        ("length", 0.5, lambda L: L**0.5),
        ("gnmt", 1.0, lambda L: (5 + L) / 6),
        ("gnmt", 3.0, lambda L: ((5 + L) / 6) ** 3),
    ],
)
def test_length_penalty_ranks_by_hand_computed_scores(penalty, alpha, lp):
    config = SearchConfig(beam_size=4, n_best=2, length_penalty=penalty, alpha=alpha, max_length_a=0, max_length_b=4)
    expected = sorted(((v / lp(len(y) + 1), list(y), v) for y, v in OUTPUTS.items()), reverse=True)
    (found,) = search(TableModel(TABLE), torch.tensor([[5]]), torch.tensor([1]), config, bos_id=BOS, eos_id=EOS)
    assert [(h.tokens, h.complete) for h in found] == [(y, True) for _, y, _ in expected[:2]]
    for h, (score, _, log_prob) in zip(found, expected, strict=False):
        assert h.score == pytest.approx(score) and h.log_prob == pytest.approx(log_prob)


def test_length_penalties_change_the_winner():
    best = {}
    for penalty, alpha in [("none", 1.0), ("length", 1.0), ("gnmt", 1.0), ("gnmt", 3.0)]:
        config = SearchConfig(beam_size=4, length_penalty=penalty, alpha=alpha, max_length_a=0, max_length_b=4)
        (found,) = search(TableModel(TABLE), torch.tensor([[5]]), torch.tensor([1]), config, bos_id=BOS, eos_id=EOS)
        best[penalty, alpha] = len(found[0].tokens)
    # none favours the shortest output; dividing by L favours the longest; GNMT's (5+L)/6 grows slower
    assert best == {("none", 1.0): 0, ("length", 1.0): 3, ("gnmt", 1.0): 0, ("gnmt", 3.0): 3}


def test_the_length_limit_cuts_hypotheses_without_eos():
    table = [{A: 1.0}]  # never EOS
    config = SearchConfig(beam_size=3, n_best=1, max_length_a=2.0, max_length_b=1)
    src, src_lengths = batch([5, 6, EOS], [5])
    hyps = search(TableModel(table), src, src_lengths, config, bos_id=BOS, eos_id=EOS)
    assert [(h[0].tokens, h[0].complete, h[0].log_prob) for h in hyps] == [([A] * 7, False, 0.0), ([A] * 3, False, 0.0)]


def test_search_config_is_validated():
    with pytest.raises(ValueError, match="n_best: 3 is more than beam_size 2"):
        SearchConfig(beam_size=2, n_best=3)
    with pytest.raises(ValueError, match="length_penalty"):
        SearchConfig(length_penalty="wu")
    with pytest.raises(ValueError, match="beam_size: 0 is less than 1"):
        SearchConfig(beam_size=0)


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"alpha": math.nan}, ValueError, "alpha: nan is not a finite number"),
        ({"alpha": math.inf}, ValueError, "alpha: inf is not a finite number"),
        ({"alpha": -0.5}, ValueError, "alpha: -0.5 is less than 0"),
        ({"beam_size": 257}, ValueError, "beam_size: 257 is more than 256"),
        ({"beam_size": 2.5}, TypeError, "beam_size must be a whole number"),
        ({"beam_size": "5"}, TypeError, "beam_size must be a whole number"),
        ({"beam_size": True}, TypeError, "beam_size must be a whole number"),
        ({"max_length_a": -1.0}, ValueError, "max_length_a: -1 is less than 0"),
        ({"max_length_b": 1001}, ValueError, "max_length_b: 1001 is more than 1000"),
        ({"max_length_a": 0.0, "max_length_b": 1}, ValueError, "max_length_b: 1 with max_length_a 0"),
    ],
)
def test_search_config_refuses_what_the_command_line_refuses(options, error, message):
    """The same ranges as the options --alpha, --beam-size, --max-length-a/b (`nmt.limits`), with the same reason."""
    with pytest.raises(error, match=re.escape(message)):
        SearchConfig(**options)
    from nmt.commands.translate import build_parser

    types = {option: action.type for action in build_parser()._actions for option in action.option_strings}
    for name, value in options.items():
        shared = {"alpha": limits.ALPHA, "beam_size": limits.BEAM_SIZE, "max_length_a": limits.MAX_LENGTH_A,
                  "max_length_b": limits.MAX_LENGTH_B}[name]  # fmt: skip
        assert types["--" + name.replace("_", "-")] is shared  # the option is checked by the same Range
        if error is ValueError and len(options) == 1:
            with pytest.raises(argparse.ArgumentTypeError, match=re.escape(message.split(": ", 1)[1])):
                shared(str(value))


# -- ensembles --------------------------------------------------------------------------------------------


def test_ensemble_of_one_is_the_model():
    model = peaked_model("rnnsearch", "paper", seed=6, tgt_vocab=15)
    config = SearchConfig(beam_size=3, n_best=3, max_length_a=1.0, max_length_b=2)
    src, src_lengths = batch(*SOURCES)
    alone = search(model, src, src_lengths, config, bos_id=BOS, eos_id=EOS)
    ensembled = search(Ensemble([model]), src, src_lengths, config, bos_id=BOS, eos_id=EOS)
    for a, e in zip(alone, ensembled, strict=True):
        assert [(h.tokens, h.score, h.log_prob, h.complete) for h in a] == [
            (h.tokens, h.score, h.log_prob, h.complete) for h in e
        ]
        for ha, he in zip(a, e, strict=True):
            torch.testing.assert_close(ha.alpha, he.alpha)


@torch.no_grad()
def test_ensemble_of_two_averages_log_probs():
    members = [
        peaked_model("rnnsearch", "paper", seed=7, tgt_vocab=15),
        peaked_model("rnnencdec", "cudnn", seed=8, tgt_vocab=15),
    ]
    ensemble = Ensemble(members)
    src, src_lengths = batch(*SOURCES)
    enc = ensemble.encode(src, src_lengths)
    y = torch.full((len(SOURCES),), BOS)
    step = ensemble.step(y, ensemble.initial_state(enc), enc)
    singles = []
    for m in members:
        e = m.encode(src, src_lengths)
        singles.append(m.step(y, m.initial_state(e), e).log_probs)
    torch.testing.assert_close(step.log_probs, (singles[0] + singles[1]) / 2)
    assert not torch.allclose(step.log_probs, singles[0]) and not torch.allclose(step.log_probs, singles[1])
    assert step.alpha is None  # one member has no attention

    # and over whole hypotheses: the ensemble's log-prob is the members' mean teacher-forced log-prob
    config = SearchConfig(beam_size=3, n_best=3, max_length_a=1.0, max_length_b=2)
    hyps = search(ensemble, src, src_lengths, config, bos_id=BOS, eos_id=EOS)
    for sentence, found in zip(SOURCES, hyps, strict=True):
        outputs = [(h.tokens, h.complete) for h in found]
        mean = sum(teacher_forced_log_probs(m, sentence, outputs)[0] for m in members) / 2
        torch.testing.assert_close(torch.tensor([h.log_prob for h in found]), mean, atol=1e-4, rtol=0)


@pytest.mark.parametrize("architecture,cell", MODELS)
def test_an_ensemble_of_one_model_or_of_one_ensemble_searches_as_what_it_holds(architecture, cell):
    """An `Ensemble` is driven by search like a model: of one member it is that member (the same hypotheses,
    log-probabilities and attention weights, bit for bit), and an ensemble of an ensemble is that ensemble (its
    nested encoder outputs and states reordered with the beam)."""
    model = peaked_model(architecture, cell, seed=9)
    pair = Ensemble([model, peaked_model(*MODELS[0], seed=10)])
    src, src_lengths = batch(*SOURCES)
    config = SearchConfig(beam_size=3, n_best=3, max_length_a=1.0, max_length_b=2)
    with torch.no_grad():
        for held, ensemble in [(model, Ensemble([model])), (pair, Ensemble([pair]))]:
            assert ensemble.pad_id == held.pad_id
            expected = search(held, src, src_lengths, config, bos_id=BOS, eos_id=EOS)
            found = search(ensemble, src, src_lengths, config, bos_id=BOS, eos_id=EOS)
            for mine, theirs in zip(itertools.chain(*found), itertools.chain(*expected), strict=True):
                assert (mine.tokens, mine.score, mine.log_prob, mine.complete) == theirs[:4]
                assert (mine.alpha is None) == (theirs.alpha is None) == (architecture == "rnnencdec")
                assert mine.alpha is None or torch.equal(mine.alpha, theirs.alpha)


def test_has_attention_says_whether_a_step_gives_attention_weights():
    members = {(architecture, cell): peaked_model(architecture, cell, seed=9) for architecture, cell in MODELS}
    attentive = [m for (architecture, _), m in members.items() if architecture == "rnnsearch"]
    models = [*members.values(), Ensemble(attentive), Ensemble(list(members.values())), Ensemble([Ensemble(attentive)])]
    src, src_lengths = batch(*SOURCES)
    for model in models:
        enc = model.encode(src, src_lengths)
        alpha = model.step(torch.full((len(SOURCES),), BOS), model.initial_state(enc), enc).alpha
        assert model.has_attention == (alpha is not None)
    assert [m.has_attention for m in models[-3:]] == [True, False, True]


def test_ensemble_refuses_different_vocabularies():
    def translator(path: str, proto: bytes):
        return SimpleNamespace(path=path, tokenizer=SimpleNamespace(to_bytes=lambda: {"src": proto, "tgt": proto}))

    check_same_vocabulary([translator("a.ckpt", b"x"), translator("b.ckpt", b"x")])
    with pytest.raises(InputError, match=r"^c\.ckpt: .*differs from that of a\.ckpt"):
        check_same_vocabulary([translator("a.ckpt", b"x"), translator("b.ckpt", b"x"), translator("c.ckpt", b"y")])


@pytest.mark.parametrize("architecture,cell", MODELS)
def test_bfloat16_search_scores_what_the_float32_model_scores(architecture, cell):
    """bf16 inference (``--dtype bfloat16``): weights and activations in bf16, the output distribution and the
    search's sums in float32. Its hypotheses' scores must be the float32 model's teacher-forced scores of the
    same outputs up to bf16 rounding (about 3 significant digits a step), and its distributions normalised."""
    model = peaked_model(architecture, cell, seed=3, tgt_vocab=12)
    fast = peaked_model(architecture, cell, seed=3, tgt_vocab=12).to(torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for p in fast.parameters())
    src, lengths = batch(*SOURCES)
    with torch.inference_mode():
        enc = fast.encode(src, lengths)
        out = fast.step(torch.full((3,), BOS), fast.initial_state(enc), enc)
    assert out.log_probs.dtype == torch.float32
    torch.testing.assert_close(out.log_probs.exp().sum(-1), torch.ones(3), atol=1e-5, rtol=0)
    config = SearchConfig(beam_size=4, n_best=4, max_length_a=0, max_length_b=6)
    for sentence, hyps in zip(SOURCES, search(fast, src, lengths, config, bos_id=BOS, eos_id=EOS), strict=True):
        exact, _ = teacher_forced_log_probs(model, sentence, [(h.tokens, h.complete) for h in hyps])
        for h, reference in zip(hyps, exact.tolist(), strict=True):
            steps = len(h.tokens) + h.complete
            assert abs(h.log_prob - reference) <= 0.05 * steps, (h, reference)
