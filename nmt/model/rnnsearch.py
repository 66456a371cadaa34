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

Deviations from the paper: optional dropout on embeddings and the maxout output; the cuDNN cell option.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nmt.model.attention import AdditiveAttention
from nmt.model.base import Seq2Seq, StepOutput, TeacherForced
from nmt.model.config import NetworkConfig
from nmt.model.encoder import GRUEncoder
from nmt.model.gru import make_cell
from nmt.model.layers import Embedding, MaxoutOutput


class Annotations(NamedTuple):
    h: Tensor  # (B, S, 2·enc) annotations h_j
    keys: Tensor  # (B, S, n') U_a h_j
    mask: Tensor  # (B, S) bool, False at padding


class RNNSearch(Seq2Seq):
    def __init__(self, *, config: NetworkConfig, src_vocab_size: int, tgt_vocab_size: int, pad_id: int = 0) -> None:
        super().__init__()
        E, n, annotation_dim = config.emb_dim, config.decoder_dim, 2 * config.encoder_dim
        self.pad_id, self.encoder_dim = pad_id, config.encoder_dim
        self.src_embed = Embedding(src_vocab_size, E, rank=config.emb_rank, pad_id=pad_id)
        self.tgt_embed = Embedding(tgt_vocab_size, E, rank=config.emb_rank, pad_id=pad_id)
        self.embed_dropout = nn.Dropout(config.dropout)
        self.encoder = GRUEncoder(emb_dim=E, hidden_dim=config.encoder_dim, bidirectional=True, cell=config.cell)
        self.W_s = nn.Linear(config.encoder_dim, n, bias=False)  # s_0 = tanh(W_s ←h_1)
        self.attention = AdditiveAttention(query_dim=n, key_dim=annotation_dim, attention_dim=config.attention_dim)
        self.W_dec = nn.Linear(E, 3 * n)  # [W_r; W_z; W] e(y_{i-1}) + b
        self.C = nn.Linear(annotation_dim, 3 * n, bias=False)  # [C_r; C_z; C] c_i
        self.cell = make_cell(config.cell, n)
        self.output = MaxoutOutput.for_network(config, state_dim=n, ctx_dim=annotation_dim, vocab_size=tgt_vocab_size)

    def encode(self, src: Tensor, src_lengths: Tensor) -> Annotations:
        mask = self.src_mask(src)
        h, _ = self.encoder(self.embed_dropout(self.src_embed(src)), src_lengths, mask)
        return Annotations(h=h, keys=self.attention.keys(h), mask=mask)

    def initial_state(self, enc: Annotations) -> tuple[Tensor]:
        backward_first = enc.h[:, 0, self.encoder_dim :]  # ←h_1
        return (torch.tanh(self.W_s(backward_first)),)

    def state_weight(self) -> Tensor:
        """[W_a; U_r; U_z] (the paper cell) or [W_a; U_r; U_z; U_n] (cuDNN): every product of s_{i-1} that does
        not wait for the reset gate, stacked so that one matmul a step computes them all."""
        return torch.cat([self.attention.W_a.weight, self.cell.state_weight])

    def _advance(
        self, x_emb: Tensor, s_prev: Tensor, enc: Annotations, state_weight: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """One step of the recurrence from the precomputed W e(y_{i-1}) + b (B, 3n) and s_{i-1} (B, n).
        With ``state_weight()`` (stacked once per sequence) W_a s_{i-1} (A.1.2) and the cell's U s_{i-1}
        (Eqs. 5–6) are one product; without it (decoding, one step a call) they are two, as stacking the
        weights every step would cost more than it saves. Returns s_i (B, n), c_i (B, 2·enc) and α_i (B, S)."""
        if state_weight is None:
            query, h_proj = self.attention.W_a(s_prev), None
        else:
            A = self.attention.attention_dim
            query, h_proj = F.linear(s_prev, state_weight).split((A, state_weight.shape[0] - A), dim=-1)
        c_i, alpha = self.attention(query, enc.keys, enc.h, enc.mask)
        s_i = self.cell(x_emb + self.C(c_i), s_prev, h_proj)
        return s_i, c_i, alpha

    def step(
        self, y_prev: Tensor, state: tuple[Tensor], enc: Annotations, output_rows: nn.Module | None = None
    ) -> StepOutput:
        e = self.embed_dropout(self.tgt_embed(y_prev))  # (B, E)
        s_prev = state[0]
        s_i, c_i, alpha = self._advance(self.W_dec(e), s_prev, enc)
        t = self.output.features(s_prev, e, self.output.project_context(c_i))
        return StepOutput(torch.log_softmax(self.logits(t, output_rows), dim=-1, dtype=torch.float32), (s_i,), alpha)

    def teacher_forced(self, enc: Annotations, tgt_in: Tensor) -> TeacherForced:
        e = self.embed_dropout(self.tgt_embed(tgt_in))  # (B, T, E)
        x_emb = self.W_dec(e)  # input products of every position in one matmul: (B, T, 3n)
        (s,) = self.initial_state(enc)
        state_weight = self.state_weight()  # stacked once per batch, not once a step
        s_prev, contexts, alphas = [], [], []
        for x_i in x_emb.unbind(1):  # unbind: one backward for all steps (see run_recurrence)
            s_prev.append(s)
            s, c_i, alpha = self._advance(x_i, s, enc, state_weight)
            contexts.append(c_i)
            alphas.append(alpha)
        S_prev = torch.stack(s_prev, dim=1)  # (B, T, n): s_{i-1} for every i
        C_all = torch.stack(contexts, dim=1)  # (B, T, 2·enc)
        t = self.output.features(S_prev, e, self.output.project_context(C_all))
        return TeacherForced(t, torch.stack(alphas, dim=1))
