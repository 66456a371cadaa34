"""RNNsearch, Bahdanau et al. 2015 (§3, Appendix A).

Encoder: a bidirectional GRU over shared embeddings; annotations h_j = [→h_j; ←h_j] (§3.2).
Decoder (A.2.2), for i = 1..T with s_0 = tanh(W_s ←h_1):

    e_ij = v_aᵀ tanh(W_a s_{i-1} + U_a h_j),  α_ij = softmax_j(e_ij),  c_i = Σ_j α_ij h_j     (A.1.2)
    s_i = GRU(s_{i-1}, e(y_{i-1}), c_i)    — c_i enters both gates and the candidate (C_r, C_z, C)
    t̃_i = U_o s_{i-1} + V_o e(y_{i-1}) + C_o c_i,  t_i = maxout(t̃_i),  p(y_i) = softmax(W_o t_i)

The query of the alignment model is the *previous* state s_{i-1}, and so is the state the output layer
reads (as the appendix writes it). Everything that does not depend on s_{i-1} is computed outside the time
loop: U_a h_j once per sentence, the input products W e(y_{i-1}) of all positions in one matmul, and the
whole output layer (U_o, V_o, C_o, maxout, W_o) over all positions after the loop.

A decoding step (``step``) reads each of s_{i-1} and e(y_{i-1}) through one stacked matrix (``StepWeights``, built
once per batch of a search): s_{i-1} ↦ [W_a s; U_{r,z} s; U_o s], e(y_{i-1}) ↦ [W e; V_o e]; and c_i through
[C; C_o] h_j, mapped once per source word by ``encode(…, for_steps=True)``: [C c_i; C_o c_i] = Σ_j α_ij [C; C_o] h_j.

Deviations from the paper: optional dropout on embeddings and the maxout output; the cuDNN cell option; optional
layer normalisation in the GRUs (Ba et al. 2016) and a target embedding tied to W_o (Press & Wolf 2017). In float32
(and a half-precision model's inference on a CPU) the energies' tanh is computed through σ, which gives the same α
(``nmt.model.attention.Keys``).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from nmt.model.attention import AdditiveAttention, Keys
from nmt.model.base import Seq2Seq, StepOutput, TeacherForced, step_log_probs
from nmt.model.config import NetworkConfig
from nmt.model.gru import make_cell
from nmt.model.layers import MaxoutOutput, stacked_linear, tie_output_to_embedding_
from nmt.model.positions import TimeSteps


class Annotations(NamedTuple):
    h: Tensor  # (B, S, 2·enc) annotations h_j
    keys: Keys  # U_a h_j (B, S, n'), in the form AdditiveAttention.keys chose
    mask: Tensor  # (B, S) bool, False at padding
    context: Tensor | None = None  # (B, S, 3n + 2l) [C_r; C_z; C; C_o] h_j, for ``step`` (see ``encode``)


class StepWeights(NamedTuple):
    """The decoder's weights as a decoding step uses them (``RNNSearch.step_weights``): the products of each input
    stacked into one layer."""

    state: nn.Module  # s_{i-1} ↦ [W_a s; U_r s; U_z s (; U s, the cuDNN cell); U_o s + b_o]
    embedding: nn.Module  # e(y_{i-1}) ↦ [W_r e; W_z e; W e] + b; V_o e]
    output: nn.Module  # W_o, or its rows of a vocabulary shortlist
    normalised: bool  # log-probs, or the scores W_o t that a search renormalises over each sentence's list


class RNNSearch(Seq2Seq):
    has_attention = True  # α_ij over the annotations at every step (A.1.2)

    def __init__(self, *, config: NetworkConfig, src_vocab_size: int, tgt_vocab_size: int, pad_id: int = 0) -> None:
        super().__init__()
        E, n, annotation_dim = config.emb_dim, config.decoder_dim, 2 * config.encoder_dim
        self.pad_id, self.encoder_dim = pad_id, config.encoder_dim
        self.add_inputs_and_encoder(config, src_vocab_size, tgt_vocab_size, pad_id, bidirectional=True)
        self.W_s = nn.Linear(config.encoder_dim, n, bias=False)  # s_0 = tanh(W_s ←h_1)
        self.attention = AdditiveAttention(query_dim=n, key_dim=annotation_dim, attention_dim=config.attention_dim)
        self.W_dec = nn.Linear(E, 3 * n)  # [W_r; W_z; W] e(y_{i-1}) + b
        self.C = nn.Linear(annotation_dim, 3 * n, bias=False)  # [C_r; C_z; C] c_i
        self.cell = make_cell(config.cell, n, layer_norm=config.decoder_layer_norm)
        self.output = MaxoutOutput.for_network(config, state_dim=n, ctx_dim=annotation_dim, vocab_size=tgt_vocab_size)
        if config.tie_embeddings:
            tie_output_to_embedding_(self.output, self.tgt_embed)  # Press & Wolf 2017

    def encode(self, src: Tensor, src_lengths: Tensor, for_steps: bool = True) -> Annotations:
        mask = self.src_mask(src)
        h, _ = self.encoder(self.embed_dropout(self.src_embed(src)), src_lengths, mask)
        if self.context_dropout is not None:  # the annotations that the alignment model and the decoder read
            h = self.context_dropout(h)
        enc = Annotations(h=h, keys=self.attention.keys(h), mask=mask)
        if not for_steps:
            return enc
        # c_i enters the decoder only through linear maps (C in the GRU, C_o in the output), and a linear map of
        # c_i = Σ_j α_ij h_j is Σ_j α_ij (the map of h_j): mapped once per source word here, a step only weighs
        # them (S multiply-adds per output instead of 2·enc), and a beam's k hypotheses share them. Teacher forcing
        # maps c_i itself: it has about as many target positions as source words, so it would gain nothing.
        return enc._replace(context=stacked_linear(self.C, self.output.O_c)(h))

    def phrase_vector(self, src: Tensor, src_lengths: Tensor, vector: str = "ends") -> Tensor:
        """``vector="ends"``: [→h_T; ←h_1], the last state of each direction (the forward state after the whole
        phrase, EOS included, and the backward state at the first word, the one the decoder starts from);
        ``"mean"``: the mean annotation (1/T) Σ_j h_j over the phrase's pieces, EOS included."""
        enc = self.encode(src, src_lengths, for_steps=False)
        h, mask = enc.h, enc.mask  # (B, S, 2·enc), (B, S)
        if vector == "mean":
            return (h * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True)
        H = self.encoder_dim
        forward_last = h[torch.arange(h.shape[0], device=h.device), src_lengths - 1, :H]  # →h_T at each EOS
        return torch.cat([forward_last, h[:, 0, H:]], dim=-1)  # [→h_T; ←h_1]

    def initial_state(self, enc: Annotations) -> tuple[Tensor]:
        backward_first = enc.h[:, 0, self.encoder_dim :]  # ←h_1
        return (torch.tanh(self.W_s(backward_first)),)

    def _state_products(self) -> nn.Module:
        """s_{i-1} ↦ [W_a s; U_r s; U_z s] (the paper cell) or [W_a s; U_r s; U_z s; U_n s] (cuDNN): every product
        of s_{i-1} that does not wait for the reset gate, stacked so that one matmul a step computes them all."""
        return stacked_linear(self.attention.W_a, self.cell.state_weight)

    def _advance(
        self, x_emb: Tensor, s_prev: Tensor, enc: Annotations, state_products: nn.Module, batch_invariant: bool
    ) -> tuple[Tensor, Tensor, Tensor]:
        """One step of the teacher-forced recurrence from the precomputed W e(y_{i-1}) + b (B, 3n) and s_{i-1}
        (B, n): W_a s_{i-1} (A.1.2) and the cell's U s_{i-1} (Eqs. 5–6) are one product, ``_state_products()``
        (stacked once per sequence). Returns s_i (B, n), c_i (B, 2·enc) and α_i (B, S)."""
        A = self.attention.attention_dim
        query, h_proj = state_products(s_prev).split((A, state_products.out_features - A), dim=-1)
        c_i, alpha = self.attention(query, enc.keys, enc.h, enc.mask, batch_invariant=batch_invariant)
        s_i = self.cell(x_emb + self.C(c_i), s_prev, h_proj)
        return s_i, c_i, alpha

    def step_weights(self, ids: Tensor | None = None, normalised: bool = True) -> StepWeights:
        """Every product of a decoding step's inputs stacked (one matrix product per input, in int8 one
        quantization), and the output layer, over the target ids `ids` only or all."""
        output = self.output
        return StepWeights(
            state=stacked_linear(self.attention.W_a, self.cell.state_weight, output.O_h),
            embedding=stacked_linear(self.W_dec, output.O_y),
            output=output.W_o if ids is None else output.rows(ids),
            normalised=normalised,
        )

    def step(
        self, y_prev: Tensor, state: tuple[Tensor], enc: Annotations, weights: StepWeights | None = None
    ) -> StepOutput:
        w = weights or self.step_weights()
        n, A, units = self.cell.hidden_dim, self.attention.attention_dim, self.output.O_h.out_features
        e = self.embed_dropout(self.tgt_embed(y_prev))  # (B·k, E): k rows per sentence of enc
        s_prev = state[0]  # (B·k, n)
        query, h_proj, state_out = w.state(s_prev).split((A, w.state.out_features - A - units, units), dim=-1)
        if enc.context is None:
            raise ValueError("RNNSearch.step needs the encoder output of encode(..., for_steps=True)")
        # [C c_i; C_o c_i] = Σ_j α_ij [C; C_o] h_j, c_i = Σ_j α_ij h_j (A.1.2; see encode): (B·k, 3n + 2l)
        context, alpha = self.attention(query, enc.keys, enc.context, enc.mask)
        x_e, embedding_out = w.embedding(e).split((3 * n, units), dim=-1)
        x_c, context_out = context.split((3 * n, units), dim=-1)
        s_i = self.cell(x_e + x_c, s_prev, h_proj)  # s_i = GRU(s_{i-1}, e(y_{i-1}), c_i) (A.2.2)
        t = self.output.maxout(state_out + embedding_out + context_out)  # t̃_i = U_o s_{i-1} + V_o e(y_{i-1}) + C_o c_i
        return StepOutput(step_log_probs(w.output(t), w.normalised), (s_i,), alpha)

    def teacher_forced(
        self, enc: Annotations, tgt_in: Tensor, lengths: Tensor | None = None, *, batch_invariant: bool = False
    ) -> TeacherForced:
        steps = TimeSteps(*tgt_in.shape, lengths)  # the positions computed, time-major
        e = self.embed_dropout(self.tgt_embed(steps.pack(tgt_in)))  # (P, E)
        x_emb = self.W_dec(e)  # input products of every position in one matmul: (P, 3n)
        (s,) = self.initial_state(enc)
        state_products = self._state_products()  # stacked once per batch, not once a step
        s_prev, contexts, alphas = [], [], []
        for x_i, rows in zip(steps.split(x_emb), steps.batch_sizes, strict=True):
            s = s[:rows]  # the rows still inside their target (all, without lengths)
            s_prev.append(s)
            rows_enc = Annotations(h=enc.h[:rows], keys=enc.keys.first(rows), mask=enc.mask[:rows])
            s, c_i, alpha = self._advance(x_i, s, rows_enc, state_products, batch_invariant)
            contexts.append(c_i)
            alphas.append(alpha)
        S_prev = torch.cat(s_prev)  # (P, n): s_{i-1} for every i
        C_all = torch.cat(contexts)  # (P, 2·enc)
        t = self.output.features(S_prev, e, self.output.project_context(C_all))
        return TeacherForced(steps.unpack(t), steps.unpack(torch.cat(alphas)))
