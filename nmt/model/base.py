"""The contract between a translation model and everything that drives it (training, search, scoring).

    enc = model.encode(src, src_lengths)            # once per batch
    state = model.initial_state(enc)                # a tuple of (B, ·) tensors
    weights = model.step_weights()                  # once per batch
    out = model.step(y_prev, state, enc, weights)   # one target position: log-probs, next state, α
    logits = model(src, src_lengths, tgt_in)        # teacher-forced, all positions at once

``enc`` and ``state`` are NamedTuples/tuples of tensors with the batch first (and flags that say what a tensor
holds, ``nmt.model.attention.Keys``), so a beam search reorders them with one ``index_select`` per tensor
(``nmt.decoding.search.select_rows``) without knowing what is inside; the state
may have k rows per row of ``enc`` (a beam: ``SearchModel.step``). Modules
keep no state between calls. ``SearchModel`` is the part of the contract that search and ensembles use;
``Seq2Seq`` is the base class of the two networks.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from nmt.model.attention import AdditiveAttention
from nmt.model.config import NetworkConfig
from nmt.model.encoder import GRUEncoder
from nmt.model.gru import reset_gru_
from nmt.model.layers import Embedding, reset_linear_


class StepOutput(NamedTuple):
    log_probs: Tensor  # (B, V) log p(y_t | y_<t, x) (or W_o t, the same up to a constant per row: step_weights)
    state: tuple[Tensor, ...]  # the decoder state after consuming y_prev
    alpha: Tensor | None  # (B, S) attention weights of this step (None for a model without attention)


class TeacherForced(NamedTuple):
    features: Tensor  # (B, T, units): the maxout output t_i before the softmax projection
    alpha: Tensor | None  # (B, T, S) attention weights, when the model has attention


@runtime_checkable
class SearchModel(Protocol):
    """What beam search (``nmt.decoding.search``) and ensembles (``nmt.decoding.ensemble``) use of a model: a
    ``Seq2Seq`` is one, and so is an ``Ensemble`` of them.

    ``enc`` and ``state`` are opaque to them: tuples (or nestings of tuples) of tensors with the batch first,
    which they only pass back and reorder by rows. The vocabulary size is read off ``step``'s log-probs (B, V).
    """

    pad_id: int
    """The id that pads ``src`` (an ensemble takes its first member's)."""

    has_attention: bool
    """Whether ``step`` gives attention weights α (RNNsearch; an ensemble when all its members do) or None."""

    def encode(self, src: Tensor, src_lengths: Tensor, for_steps: bool = True) -> tuple:
        """src (B, S) long, padded with pad_id; src_lengths (B,) -> the encoder output. ``for_steps=False``: without
        what only ``step`` uses (a caller of ``teacher_forced`` alone saves computing it)."""
        ...

    def initial_state(self, enc: tuple) -> tuple:
        """The decoder state before the first target word."""
        ...

    def step_weights(self, ids: Tensor | None = None, normalised: bool = True) -> object:
        """The weights ``step`` computes with, prepared once per batch and passed to every step: each input's
        products stacked into one, and the output layer over the target ids `ids` (sorted; a vocabulary shortlist,
        ``nmt.decoding.shortlist``) or, for None, over the whole vocabulary. ``normalised=False`` (with `ids`): ``step``
        gives the output layer's scores alone, log-probabilities up to a constant per row, for a search that
        renormalises each sentence's own list itself (a constant does not survive that)."""
        ...

    def step(self, y_prev: Tensor, state: tuple, enc: tuple, weights: object = None) -> StepOutput:
        """y_prev (B·k,) long, the previous target word (BOS first) -> log p(· | y_<t, x) (B·k, V), the next state
        and the attention weights α (B·k, S) or None. ``state`` has B·k rows, ``enc`` B: k ≥ 1 consecutive rows of
        the state (a sentence's beam, row n·k + j) share row n of the encoder output. ``weights``:
        ``step_weights(…)`` (None: prepared for this call); with ``step_weights(ids)`` the log-probs (B·k, len(ids))
        are over those ids, renormalised over them (with ``normalised=False``, scores: see ``step_weights``)."""
        ...


def step_log_probs(scores: Tensor, normalised: bool) -> Tensor:
    """A step's log p(y | ·) in float32 from the output layer's scores W_o t, or the scores alone when not `normalised`
    (``SearchModel.step_weights``)."""
    return torch.log_softmax(scores, dim=-1, dtype=torch.float32) if normalised else scores.float()


def per_state_row(x: Tensor, rows: int) -> Tensor:
    """x (B, …), one row per sentence, for a state of `rows` = B·k rows (k consecutive per sentence): (B·k, …)."""
    return x if x.shape[0] == rows else x.repeat_interleave(rows // x.shape[0], dim=0)


class Seq2Seq(nn.Module):
    """Base class of both models; subclasses implement encode / initial_state / step / teacher_forced /
    phrase_vector and say whether they have attention."""

    pad_id: int
    has_attention: bool
    """See ``SearchModel.has_attention``."""

    def add_inputs_and_encoder(
        self, config: NetworkConfig, src_vocab_size: int, tgt_vocab_size: int, pad_id: int, *, bidirectional: bool
    ) -> None:
        """The modules both models begin with, in this order (the order of the parameters is that of their
        initialisation): the word embeddings of each side, their dropout, the dropout of the source context, and
        the GRU encoder (one direction for the RNN Encoder–Decoder, both for RNNsearch)."""
        E = config.emb_dim
        self.src_embed = Embedding(src_vocab_size, E, rank=config.emb_rank, pad_id=pad_id)
        self.tgt_embed = Embedding(tgt_vocab_size, E, rank=config.emb_rank, pad_id=pad_id)
        self.embed_dropout = nn.Dropout(config.embedding_dropout_rate)
        # None when 0, so that a network without it draws no random numbers for it (training stays as it was)
        self.context_dropout = nn.Dropout(config.context_dropout) if config.context_dropout else None
        self.encoder = GRUEncoder(
            emb_dim=E,
            hidden_dim=config.encoder_dim,
            bidirectional=bidirectional,
            cell=config.cell,
            layer_norm=config.encoder_layer_norm,
        )

    def encode(self, src: Tensor, src_lengths: Tensor, for_steps: bool = True) -> tuple[Tensor, ...]:
        """src (B, S) long, padded with pad_id; src_lengths (B,). Returns the model's encoder output
        (``SearchModel.encode``)."""
        raise NotImplementedError

    def initial_state(self, enc: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        raise NotImplementedError

    def step_weights(self, ids: Tensor | None = None, normalised: bool = True) -> tuple:
        """See ``SearchModel.step_weights``."""
        raise NotImplementedError

    def step(
        self, y_prev: Tensor, state: tuple[Tensor, ...], enc: tuple[Tensor, ...], weights: tuple | None = None
    ) -> StepOutput:
        """y_prev (B,) long: the previous target word (BOS at the start). One decoding step (``SearchModel.step``)."""
        raise NotImplementedError

    def teacher_forced(
        self, enc: tuple[Tensor, ...], tgt_in: Tensor, lengths: Tensor | None = None, *, batch_invariant: bool = False
    ) -> TeacherForced:
        """tgt_in (B, T) = BOS y_1 … y_{T-1}: the output features of every position at once. ``lengths`` (B,), rows
        sorted longest first: compute only each row's first `length` positions (``nmt.model.positions``); the
        others' features and weights are zeros. ``batch_invariant``: each row's values the same whatever the batch's
        row count, with the attention's slower batch-invariant form (``AdditiveAttention.forward``), for scoring."""
        raise NotImplementedError

    def phrase_vector(self, src: Tensor, src_lengths: Tensor, vector: str = "ends") -> Tensor:
        """src (B, S) long, padded with pad_id; src_lengths (B,) -> the encoder's representation of each source
        phrase (B, D) (Cho et al. 2014 §4.4): what the model's decoder is conditioned on, or for a model with one
        vector per source word, ``vector="ends"`` or ``"mean"`` of them."""
        raise NotImplementedError

    def logits(self, features: Tensor) -> Tensor:
        """features (..., units) -> scores over the target vocabulary (..., V)."""
        return self.output.logits(features)

    def forward(self, src: Tensor, src_lengths: Tensor, tgt_in: Tensor) -> Tensor:
        """Teacher-forced scores (B, T, V) of tgt_out given tgt_in."""
        return self.logits(self.teacher_forced(self.encode(src, src_lengths, for_steps=False), tgt_in).features)

    def src_mask(self, src: Tensor) -> Tensor:
        return src != self.pad_id

    @torch.no_grad()
    def init_weights(self, *, std: float, attention_std: float) -> None:
        """The papers' initialisation (Cho §4.1.1, Bahdanau B.1), module by module: recurrent matrices orthogonal
        (per gate block), the alignment model's W_a and U_a from N(0, attention_std²), v_a and all biases 0, every
        other weight from N(0, std²) (an embedding's padding row 0)."""
        for module in self.children():
            _reset(module, attention_std if isinstance(module, AdditiveAttention) else std)


def _reset(module: nn.Module, std: float) -> None:
    """The papers' initialisation of one part of a network, with N(0, std²) for its non-recurrent weights: torch's
    own layers here, the model's modules (``Embedding``, ``GRUEncoder``, the GRU cells, ``AdditiveAttention``,
    ``MaxoutOutput``) by their ``reset_parameters(std=…)``; a module without parameters (dropout) has none to set."""
    if isinstance(module, nn.Linear):
        reset_linear_(module, std)
    elif isinstance(module, nn.GRU):
        reset_gru_(module, std)
    elif any(True for _ in module.parameters()):
        module.reset_parameters(std=std)
