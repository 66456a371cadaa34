"""`Translator`: a trained model ready for inference, with Python objects in and out.

    from nmt import SearchConfig, Translator

    translator = Translator.load("runs/multi30k_en_fr_attention/checkpoints/best.ckpt")
    for t in translator.translate(["A man rides a bike.", "Two dogs play."], search=SearchConfig(beam_size=5)):
        print(t.text)
    translator.score(["A dog runs."], ["Un chien court."]).logprob      # log p(target | source)
    translator.encode(["a red car"])                                    # the encoder's phrase vectors

Every command (translate, evaluate, score, embed, plot-attention) is argument parsing and file I/O around
these methods. Lines become ids through `nmt.data.encoding` (tokenize, the blank-line rule, over-long lines cut
with a warning) and batches through `nmt.inference.batching` (sort by length into token batches, pad, restore
input order). `translate` and `encode_stream` take any iterable and yield as they go, so a command streams a
file or a pipe through the same code a Python user calls.

Arguments are checked as the commands check their options (`nmt.limits`: one range per number, so the CLI and the
API refuse the same values for the same reason): a number out of range is a ValueError naming the parameter; one
str where a sequence of lines belongs, or an item that is not a str, a TypeError (naming the item's index).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np
import torch

from nmt import limits
from nmt.checkpoint import INFERENCE_DTYPES, LoadedModel, load_model, resolve_device
from nmt.data.encoding import Source, encode_sources, source_ids, target_ids
from nmt.data.tokenizer import BOS, EOS, EOS_PIECE, Tokenizer
from nmt.decoding import Ensemble, Hypothesis, SearchConfig, check_same_vocabulary, search
from nmt.decoding.shortlist import SHORTLIST_FIRST, SHORTLIST_PER_WORD, Shortlist
from nmt.errors import InputError
from nmt.inference.batching import chunks, pad_sources, read_ahead, token_batches
from nmt.model import NetworkConfig
from nmt.scoring.scorer import PairScorer, PairScores, ScoringConfig
from nmt.textio import single_line

WINDOW_BATCHES = 8
"""`translate` sorts the lines already read by length over up to this many batches."""


class Candidate(NamedTuple):
    """One translation of a line (the best, or one of the n best)."""

    text: str
    """The detokenized translation (one line: line breaks the model wrote become spaces)."""
    tokens: list[int]
    """Target piece ids, without BOS and EOS."""
    score: float
    """What the n-best list is ranked by: log_prob / lp(length) (= log_prob without a length penalty)."""
    log_prob: float
    """log p(translation + EOS | source), unnormalised."""
    attention: np.ndarray | None
    """(T, S) attention weights, a row per output piece (and EOS when complete), a column per source piece and
    the source EOS; None for a model without attention."""

    def alignment(self) -> list[tuple[int, int]]:
        """(source piece, target piece) links: each target piece to the source piece it attends to most; links
        to the source EOS left out. Both count SentencePiece pieces from 0."""
        if self.attention is None or not self.tokens:
            return []
        best = self.attention[: len(self.tokens)].argmax(axis=-1).tolist()  # (T,) source piece of each target piece
        eos = self.attention.shape[1] - 1
        return [(i, j) for j, i in enumerate(best) if i < eos]


class Translation(NamedTuple):
    """The result for one input line."""

    line: int
    """1-based number of the input line."""
    candidates: list[Candidate]
    """Best first: one, or `SearchConfig.n_best`. A blank line has one empty candidate (score 0)."""

    @property
    def text(self) -> str:
        return self.candidates[0].text


class Alignment(NamedTuple):
    """The soft alignment of one sentence pair (Bahdanau et al. 2015, Fig. 3)."""

    src_pieces: list[str]  # (S) source pieces, EOS included
    tgt_pieces: list[str]  # (T) target pieces, EOS included when the translation ended
    alpha: np.ndarray  # (T, S) attention weights; row i sums to 1 over the source
    translation: str  # the target sentence shown (the given one, or the model's translation)


class Translator:
    """A model (or an ensemble of models of one vocabulary) in eval mode on its device, with its tokenizer."""

    def __init__(self, members: Sequence[LoadedModel]) -> None:
        if not members:
            raise ValueError("a Translator needs at least one model")
        check_same_vocabulary(members)
        self.members = list(members)
        first = members[0]
        self.model = first.model if len(members) == 1 else Ensemble([m.model for m in members]).eval()
        self.tokenizer: Tokenizer = first.tokenizer
        self.network: NetworkConfig = first.network
        self.path = first.path
        self.device = next(first.model.parameters()).device

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        ensemble: Sequence[str | Path] = (),
        device: str | torch.device = "auto",
        dtype: str | torch.dtype = "float32",
    ) -> Translator:
        """The checkpoint at `path` (written by `nmt fit` or `nmt export`), and `ensemble`'s, decoded together (the
        mean of their log-probabilities). device: "auto" (CUDA when there is one), "cpu", "cuda", "cuda:1" …;
        dtype: float32 (as trained), bfloat16 or int8 (see `nmt.checkpoint.INFERENCE_DTYPES`). A bad file raises
        `InputError` naming it."""
        if isinstance(dtype, str) and dtype not in INFERENCE_DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(INFERENCE_DTYPES)}, got {dtype!r}")
        target = resolve_device(device) if isinstance(device, str) else device
        return cls([load_model(p, device=target, dtype=dtype) for p in [path, *ensemble]])

    @property
    def has_attention(self) -> bool:
        return self.model.has_attention

    def require_attention(self, why: str) -> None:
        """An `InputError` naming the first checkpoint without attention, for a feature that needs it."""
        for m in self.members:
            if not m.model.has_attention:
                raise InputError(
                    path=m.path, message=f"{why} needs an attention model (rnnsearch); this is {m.network.architecture}"
                )

    # -- translation ---------------------------------------------------------------------------------------------

    def check_beam_size(self, beam_size: int) -> None:
        """An `InputError` naming the checkpoint when a beam of `beam_size` is wider than the target vocabulary: the
        search's first step has only V words to fill it with. Every search checks it before reading a line; a
        caller that fixes the widest beam up front (the server's --max-beam-size) checks that once."""
        vocab = self.tokenizer.tgt_vocab_size
        if beam_size > vocab:
            raise InputError(
                path=self.path,
                message=f"a beam of {beam_size} is wider than its target vocabulary ({vocab} pieces): the first step "
                "has no more words to fill the beam with",
            )

    def translate(
        self,
        lines: Iterable[str],
        search: SearchConfig | None = None,
        *,
        batch_tokens: int = 500,
        max_input_tokens: int = 250,
        source_name: str = "<input>",
        warning_prefix: str | None = "warning",
        shortlist: Shortlist | None = None,
    ) -> Iterator[Translation]:
        """Translate `lines`, yielding one `Translation` per line in input order, each as soon as it and every
        line before it are done. Lines are read ahead (in a thread) and the ones already read are batched by
        length, so a list is translated in sorted batches and a pipe answers each line as it comes.

        A beam wider than the target vocabulary is an `InputError` at once, before any line is read
        (`check_beam_size`). A blank line gets one empty candidate; a line longer than `max_input_tokens` pieces is
        translated from its first pieces (``WARNING_PREFIX: SOURCE_NAME:LINE: …`` on stderr, the text of
        `nmt.data.encoding.too_long`; none with warning_prefix None). A NaN or infinite score (a broken model)
        raises `InputError` naming the line. With a `shortlist` (`nmt.decoding.shortlist`) each batch chooses among
        its target pieces only, and scores are renormalised over them."""
        batches = self.translate_batches(
            lines,
            search,
            batch_tokens=batch_tokens,
            max_input_tokens=max_input_tokens,
            source_name=source_name,
            warning_prefix=warning_prefix,
            shortlist=shortlist,
        )
        return (translation for ready in batches for translation in ready)

    def translate_batches(
        self,
        lines: Iterable[str],
        search: SearchConfig | None = None,
        *,
        batch_tokens: int = 500,
        max_input_tokens: int = 250,
        source_name: str = "<input>",
        warning_prefix: str | None = "warning",
        shortlist: Shortlist | None = None,
    ) -> Iterator[list[Translation]]:
        """`translate`, yielding after each batch the translations it made ready (in input order; often none,
        when an earlier line is still to come): a writer flushes once per batch rather than once per line."""
        config = _search_config(search)
        limits.BATCH_TOKENS.check(batch_tokens, "batch_tokens")
        limits.PIECES.check(max_input_tokens, "max_input_tokens")
        self.check_beam_size(config.beam_size)
        return self._translate_batches(
            limits.each_text(lines, "lines"),
            config,
            batch_tokens,
            max_input_tokens,
            source_name,
            _warning(warning_prefix),
            shortlist,
        )

    def _translate_batches(
        self,
        lines: Iterable[str],
        config: SearchConfig,
        batch_tokens: int,
        max_input_tokens: int,
        source_name: str,
        warn: Callable[[str], None] | None,
        shortlist: Shortlist | None,
    ) -> Iterator[list[Translation]]:
        def where(number: int) -> str:
            return f"{source_name}:{number}"

        def encode(text: str, number: int) -> Source:
            return encode_sources(
                self.tokenizer, [text], max_tokens=max_input_tokens, where=where, first=number, warn=warn
            )[0]

        def full(window: list[Source]) -> bool:
            return sum(max(1, len(s.ids)) for s in window) >= WINDOW_BATCHES * batch_tokens

        done: dict[int, Translation] = {}
        next_line = 1
        for window in read_ahead(lines, encode, full=full):
            for translated in self._translated_batches(window, config, batch_tokens, source_name, shortlist):
                done.update((t.line, t) for t in translated)
                ready = []
                while next_line in done:
                    ready.append(done.pop(next_line))
                    next_line += 1
                yield ready

    def translate_sources(
        self,
        sources: Sequence[Source],
        search: SearchConfig | None = None,
        *,
        batch_tokens: int = 500,
        source_name: str = "<input>",
        shortlist: Shortlist | None = None,
    ) -> list[Translation]:
        """Translations of lines already encoded (`nmt.data.encoding.encode_sources`: pieces + EOS, cut to
        length; no pieces for a blank line), in the order given, each numbered as its `Source`. No reader thread
        and no second tokenization: what a caller that has counted the pieces itself (the server) wants."""
        config = _search_config(search)
        limits.BATCH_TOKENS.check(batch_tokens, "batch_tokens")
        limits.not_one_text(sources, "sources")
        for index, source in enumerate(sources):
            if not isinstance(source, Source):
                raise TypeError(f"sources[{index}] must be a nmt.data.encoding.Source, not {type(source).__name__}")
        self.check_beam_size(config.beam_size)
        by_number = {
            t.line: t
            for translated in self._translated_batches(sources, config, batch_tokens, source_name, shortlist)
            for t in translated
        }
        if len(by_number) != len(sources):
            raise ValueError("translate_sources needs a distinct number for each source")
        return [by_number[s.number] for s in sources]

    def _translated_batches(
        self,
        sources: Sequence[Source],
        config: SearchConfig,
        batch_tokens: int,
        source_name: str,
        shortlist: Shortlist | None = None,
    ) -> Iterator[list[Translation]]:
        """The sources sorted by length into token batches, each batch's translations as it is searched."""
        for batch in token_batches(sources, batch_tokens, length=lambda s: len(s.ids)):
            translated = []
            for source, found in zip(batch, self._search(batch, config, shortlist), strict=True):
                _check_finite(found, source_name, source.number)
                translated.append(Translation(source.number, self._candidates(found, len(source.ids))))
            yield translated

    def _search(
        self, batch: Sequence[Source], config: SearchConfig, shortlist: Shortlist | None = None
    ) -> list[list[Hypothesis]]:
        """Search all non-blank sources of a batch at once; a blank line gets one empty hypothesis."""
        results: list[list[Hypothesis]] = [[Hypothesis([], 0.0, 0.0)] for _ in batch]
        todo = [i for i, s in enumerate(batch) if s.ids]
        if todo:
            ids = [batch[i].ids for i in todo]
            src, lengths = pad_sources(ids, self.device)
            vocab, allowed = (None, None) if shortlist is None else shortlist.for_batch(ids, self.device)
            found = search(self.model, src, lengths, config, bos_id=BOS, eos_id=EOS, vocab=vocab, allowed=allowed)
            for i, hyps in zip(todo, found, strict=True):
                results[i] = hyps
        return results

    def load_shortlist(
        self, path: str, *, first: int = SHORTLIST_FIRST, per_word: int = SHORTLIST_PER_WORD
    ) -> Shortlist:
        """The vocabulary shortlist of a lexical table (``nmt shortlist``) for this model: the `first` most frequent
        target pieces and each source piece's `per_word` best translations. A bad table raises `InputError`."""
        return Shortlist.read(path, self.tokenizer, first=first, per_word=per_word)

    def _candidates(self, found: list[Hypothesis], src_length: int) -> list[Candidate]:
        texts = self.tokenizer.decode_tgt([h.tokens for h in found])
        return [
            Candidate(
                text=single_line(text),
                tokens=h.tokens,
                score=h.score,
                log_prob=h.log_prob,
                attention=None if h.alpha is None else h.alpha[:, :src_length].float().numpy(),
            )
            for h, text in zip(found, texts, strict=True)
        ]

    # -- scoring ------------------------------------------------------------------------------------------------

    def scorer(self, config: ScoringConfig | None = None, *, count_unk: bool = False) -> PairScorer:
        """A `PairScorer` (teacher-forced log p(target | source), batch-invariant) of this model."""
        if isinstance(self.model, Ensemble):
            raise InputError(path=self.path, message="scoring takes one model, not an ensemble")
        return PairScorer(self.model, self.tokenizer, config=config, count_unk=count_unk)

    def score(
        self, sources: Sequence[str], targets: Sequence[str], *, config: ScoringConfig | None = None
    ) -> PairScores:
        """log p(target | source) of each pair, EOS included, unnormalised (float64), with its flags. `sources` and
        `targets` are sequences of str of the same length (one str alone is a TypeError, not one pair)."""
        sources, targets = limits.texts(sources, "sources"), limits.texts(targets, "targets")
        if len(sources) != len(targets):
            raise ValueError(f"{len(sources)} sources but {len(targets)} targets: score takes pairs")
        return self.scorer(config).score(sources, targets)

    # -- phrase vectors (Cho et al. 2014 §4.4) ------------------------------------------------------------------

    def encode_stream(
        self,
        phrases: Iterable[str],
        *,
        vector: Literal["ends", "mean"] = "ends",
        batch_tokens: int = 4000,
        max_input_tokens: int = 250,
        window: int = 4096,
        source_name: str = "<input>",
        warning_prefix: str | None = "warning",
    ) -> Iterator[np.ndarray]:
        """The encoder's vector of each phrase, float32 (n, D) blocks in input order (see `encode`)."""
        _check_vector(vector)
        limits.BATCH_TOKENS.check(batch_tokens, "batch_tokens")
        limits.PIECES.check(max_input_tokens, "max_input_tokens")
        limits.WINDOW.check(window, "window")
        phrases = limits.each_text(phrases, "phrases")
        if isinstance(self.model, Ensemble):
            raise InputError(path=self.path, message="phrase vectors come from one model, not an ensemble")
        warn = _warning(warning_prefix)
        first = 1
        for block in chunks(phrases, window):
            sources = [
                Source(s.number, s.ids or [EOS])  # a blank line: the empty phrase, EOS alone
                for s in encode_sources(
                    self.tokenizer,
                    block,
                    max_tokens=max_input_tokens,
                    where=lambda number: f"{source_name}:{number}",
                    first=first,
                    warn=warn,
                )
            ]
            vectors: np.ndarray | None = None
            for batch in token_batches(sources, batch_tokens, length=lambda s: len(s.ids)):
                found = self._vectors([s.ids for s in batch], vector)
                if vectors is None:
                    vectors = np.empty((len(sources), found.shape[1]), dtype=np.float32)
                vectors[[s.number - first for s in batch]] = found
            assert vectors is not None
            bad = np.flatnonzero(~np.isfinite(vectors).all(axis=1))
            if len(bad):  # a broken network: its vectors mean nothing
                raise InputError(
                    path=source_name,
                    line=first + int(bad[0]),
                    message="the model's vector for this phrase is not finite (its network overflows or its weights "
                    "are broken)",
                )
            first += len(block)
            yield vectors

    def encode(self, phrases: Sequence[str], *, vector: Literal["ends", "mean"] = "ends") -> np.ndarray:
        """The encoder's representation of each phrase, float32 (N, D):

        - RNN Encoder–Decoder: the summary c = tanh(V h_T) (Cho A.1), the vector the decoder is conditioned on.
        - RNNsearch: ``vector="ends"``: [→h_T; ←h_1], the last state of each direction (the forward state after
          the whole phrase, EOS included, and the backward state at the first word, the one the decoder starts
          from); ``"mean"``: the mean annotation (1/T) Σ_j h_j over the phrase's pieces, EOS included."""
        phrases = limits.texts(phrases, "phrases")
        if not phrases:
            raise ValueError("no phrases to encode")
        return np.concatenate(list(self.encode_stream(phrases, vector=vector)))

    @torch.inference_mode()
    def _vectors(self, ids: list[list[int]], vector: str) -> np.ndarray:
        src, lengths = pad_sources(ids, self.device)
        return self.model.phrase_vector(src, lengths, vector).float().cpu().numpy()

    # -- attention (Bahdanau et al. 2015, Fig. 3) ---------------------------------------------------------------

    @torch.inference_mode()
    def attention(self, src: str, tgt: str | None = None, *, beam_size: int = 1) -> Alignment:
        """The attention weights of `tgt` given `src` (teacher-forced), or of the model's own translation."""
        for name, text in (("src", src), ("tgt", tgt)):
            if not isinstance(text, str) and not (name == "tgt" and text is None):
                raise TypeError(f"{name} must be a str (one sentence), not {type(text).__name__}")
        limits.BEAM_SIZE.check(beam_size, "beam_size")
        self.require_attention("an attention map")
        model, tokenizer = self.model, self.tokenizer
        src_ids = source_ids(tokenizer, [src])[0]  # pieces + EOS
        src_t, lengths = pad_sources([src_ids], self.device)
        if tgt is not None:
            if isinstance(model, Ensemble):
                raise InputError(path=self.path, message="a given target is aligned by one model, not an ensemble")
            tgt_ids = target_ids(tokenizer, [tgt])[0]
            tgt_in = torch.tensor([[BOS, *tgt_ids]], device=self.device)  # BOS y_1 … y_n predicts y_1 … EOS
            alpha = model.teacher_forced(model.encode(src_t, lengths, for_steps=False), tgt_in).alpha[0]  # (T, S)
            tgt_pieces, translation = [*tokenizer.tgt_pieces(tgt_ids), EOS_PIECE], tgt
        else:
            self.check_beam_size(beam_size)
            best = search(model, src_t, lengths, SearchConfig(beam_size=beam_size), bos_id=BOS, eos_id=EOS)[0][0]
            alpha = best.alpha  # (T, S): one row per output piece, and one for EOS when the translation ended
            tgt_pieces = [*tokenizer.tgt_pieces(best.tokens), *([EOS_PIECE] if best.complete else [])]
            translation = tokenizer.decode_tgt([best.tokens])[0]
        return Alignment(tokenizer.src_pieces(src_ids), tgt_pieces, alpha.float().cpu().numpy(), translation)


def _check_vector(vector: object) -> None:
    if vector not in ("ends", "mean"):
        raise ValueError(f"vector must be 'ends' or 'mean', got {vector!r:.40}")


def _warning(prefix: str | None) -> Callable[[str], None] | None:
    """What prints a warning on stderr as ``PREFIX: WHERE: …`` (None: no warnings)."""
    if prefix is None:
        return None
    return lambda message: print(f"{prefix}: {message}", file=sys.stderr, flush=True)


def _check_finite(found: list[Hypothesis], source_name: str, line: int) -> None:
    """A NaN or infinite score means the network overflowed or its weights are broken: its words are garbage."""
    bad = next((h for h in found if not (math.isfinite(h.log_prob) and math.isfinite(h.score))), None)
    if bad is not None:
        raise InputError(
            path=source_name,
            line=line,
            message=f"the model scores its translation of this line {bad.log_prob} (its network overflows or its "
            "weights are broken); stopping rather than writing it",
        )


def _search_config(search: object) -> SearchConfig:
    if search is None:
        return SearchConfig()
    if not isinstance(search, SearchConfig):
        raise TypeError(f"search must be a SearchConfig or None, not {type(search).__name__}")
    return search
