"""The RNN Encoder–Decoder of Cho et al. 2014 (§2.2, Appendix A).

Encoder: a GRU reads x_1..x_T; the summary is c = tanh(V h_T) (A.1).
Decoder: h'_0 = tanh(V' c) and, at every step, c enters both gates and the candidate (A.2):

    r' = σ(W'_r e(y_{t-1}) + C_r c + U'_r h'_{t-1}),   z' likewise,
    h̃' = tanh(W' e(y_{t-1}) + C c + U' (r' ⊙ h'_{t-1})),   h'_t = z' ⊙ h'_{t-1} + (1 − z') ⊙ h̃'.

Output: p(y_t | y_<t, c) = g(h'_t, y_{t-1}, c) through the maxout deep output layer.

Because c is the same at every step, C c is computed once per sentence, and W' e(y_{t-1}) for every t is one
matrix product before the time loop. With the cuDNN cell the whole teacher-forced decoder is one ``nn.GRU`` call
over [e(y_{t-1}); c], whose input matrix is [W' | C]; ``step`` uses the same weights one position at a time.

Deviations from the paper: optional dropout on embeddings and the maxout output; the encoder input has a
bias (the paper's equations omit biases, its code has them); optional layer normalisation in the GRUs (Ba et al.
2016) and a target embedding tied to W_o (Press & Wolf 2017).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nmt.model.base import Seq2Seq, StepOutput, TeacherForced, per_state_row, step_log_probs
from nmt.model.config import NetworkConfig
from nmt.model.gru import PaperGRUCell, cudnn_step
from nmt.model.layers import LinearMap, MaxoutOutput, stacked_linear, tie_output_to_embedding_
from nmt.model.positions import TimeSteps


class Summary(NamedTuple):
    c: Tensor  # (B, n) the summary of the source sentence
    c_gates: Tensor  # (B, 3n) C c: its input to the decoder's gates and candidate, the same at every step
    c_out: Tensor  # (B, 2l) O_c c: its input to the deep output layer


class StepWeights(NamedTuple):
    """The decoder's weights as a decoding step uses them (``RNNEncoderDecoder.step_weights``)."""

    embedding: nn.Module  # e(y_{t-1}) ↦ [[W'_r; W'_z; W'] e + b; O_y e], one product
    output: nn.Module  # W_o, or its rows of a vocabulary shortlist
    normalised: bool  # log-probs, or the scores W_o t that a search renormalises over each sentence's list


class RNNEncoderDecoder(Seq2Seq):
    has_attention = False  # one summary c for the whole sentence

    def __init__(self, *, config: NetworkConfig, src_vocab_size: int, tgt_vocab_size: int, pad_id: int = 0) -> None:
        super().__init__()
        E, n = config.emb_dim, config.decoder_dim
        self.pad_id, self.cell_type = pad_id, config.cell
        self.add_inputs_and_encoder(config, src_vocab_size, tgt_vocab_size, pad_id, bidirectional=False)
        self.V = nn.Linear(config.encoder_dim, n, bias=False)  # c = tanh(V h_T)
        self.V_dec = nn.Linear(n, n, bias=False)  # h'_0 = tanh(V' c)
        if config.cell == "paper":
            self.W_dec = nn.Linear(E, 3 * n)  # [W'_r; W'_z; W'] e(y_{t-1}) + b
            self.C = nn.Linear(n, 3 * n, bias=False)  # [C_r; C_z; C] c
            self.cell = PaperGRUCell(n, layer_norm=config.decoder_layer_norm)
        else:
            self.rnn = nn.GRU(E + n, n, batch_first=True)  # weight_ih_l0 = [W' | C]
        self.output = MaxoutOutput.for_network(config, state_dim=n, ctx_dim=n, vocab_size=tgt_vocab_size)
        if config.tie_embeddings:
            tie_output_to_embedding_(self.output, self.tgt_embed)  # Press & Wolf 2017
        self.emb_dim = E

    # -- encoder ------------------------------------------------------------------------------------------
    def encode(self, src: Tensor, src_lengths: Tensor, for_steps: bool = True) -> Summary:
        del for_steps  # the summary's products serve both teacher forcing and steps
        x = self.embed_dropout(self.src_embed(src))
        _, h_T = self.encoder(x, src_lengths, self.src_mask(src))
        c = torch.tanh(self.V(h_T))  # (B, n)
        if self.context_dropout is not None:  # the summary that the decoder reads
            c = self.context_dropout(c)
        return Summary(c=c, c_gates=self._context_gates(c), c_out=self.output.project_context(c))

    def phrase_vector(self, src: Tensor, src_lengths: Tensor, vector: str = "ends") -> Tensor:
        """The summary c = tanh(V h_T) (A.1), the vector the decoder is conditioned on, whatever `vector` asks."""
        del vector  # one vector per phrase: its ends and its mean are the same
        return self.encode(src, src_lengths, for_steps=False).c

    def _context_gates(self, c: Tensor) -> Tensor:
        if self.cell_type == "paper":
            return self.C(c)
        return F.linear(c, self.rnn.weight_ih_l0[:, self.emb_dim :])

    def _embedding_gates(self) -> LinearMap:
        """e(y) ↦ W' e(y) + b, (..., E) -> (..., 3n): the paper cell's W_dec, or the embedding's columns of
        ``nn.GRU``'s input matrix [W' | C] with its input bias."""
        if self.cell_type == "paper":
            return self.W_dec
        return self.rnn.weight_ih_l0[:, : self.emb_dim], self.rnn.bias_ih_l0

    # -- decoder ------------------------------------------------------------------------------------------
    def initial_state(self, enc: Summary) -> tuple[Tensor]:
        return (torch.tanh(self.V_dec(enc.c)),)

    def _recur(self, x_proj: Tensor, h: Tensor) -> Tensor:
        if self.cell_type == "paper":
            return self.cell(x_proj, h)
        return cudnn_step(x_proj, h, F.linear(h, self.rnn.weight_hh_l0, self.rnn.bias_hh_l0))

    def step_weights(self, ids: Tensor | None = None, normalised: bool = True) -> StepWeights:
        """The products of e(y_{t-1}) stacked into one, and the output layer over the target ids `ids` only or all."""
        output = self.output
        rows = output.W_o if ids is None else output.rows(ids)
        return StepWeights(stacked_linear(self._embedding_gates(), output.O_y), rows, normalised=normalised)

    def step(
        self, y_prev: Tensor, state: tuple[Tensor], enc: Summary, weights: StepWeights | None = None
    ) -> StepOutput:
        w = weights or self.step_weights()
        units = self.output.O_h.out_features  # 2·maxout units
        e = self.embed_dropout(self.tgt_embed(y_prev))  # (B·k, E): k rows per sentence of enc
        x_e, embedding_out = w.embedding(e).split((w.embedding.out_features - units, units), dim=-1)
        rows = y_prev.shape[0]
        # h'_t from W' e(y_{t-1}) + C c and h'_{t-1} (A.2)
        h = self._recur(x_e + per_state_row(enc.c_gates, rows), state[0])
        # g(h'_t, y_{t-1}, c)
        t = self.output.maxout(self.output.O_h(h) + embedding_out + per_state_row(enc.c_out, rows))
        return StepOutput(step_log_probs(w.output(t), w.normalised), (h,), None)

    def teacher_forced(
        self, enc: Summary, tgt_in: Tensor, lengths: Tensor | None = None, *, batch_invariant: bool = False
    ) -> TeacherForced:
        del batch_invariant  # no alignment model: nothing here has a batch-dependent form to avoid
        steps = TimeSteps(*tgt_in.shape, lengths)  # the positions computed, time-major
        e = self.embed_dropout(self.tgt_embed(steps.pack(tgt_in)))  # (P, E)
        (h,) = self.initial_state(enc)
        if self.cell_type == "paper":
            x_proj = self.W_dec(e)  # the input products of every position in one matmul: (P, 3n)
            states = []
            for x_i, rows in zip(steps.split(x_proj), steps.batch_sizes, strict=True):
                # h'_t from W' e(y_{t-1}) + C c and h'_{t-1} (A.2), over the rows still inside their target
                h = self.cell(x_i + enc.c_gates[:rows], h[:rows])
                states.append(h)
            h = torch.cat(states)  # (P, n)
        else:
            x = torch.cat([e, steps.per_position(enc.c)], dim=-1)  # [e(y_{t-1}); c] at every position
            h = self.rnn(steps.sequence(x), h.unsqueeze(0).contiguous())[0].data  # (P, n)
        return TeacherForced(steps.unpack(self.output.features(h, e, steps.per_position(enc.c_out))), None)
