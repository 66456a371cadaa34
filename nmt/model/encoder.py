"""GRU encoders: unidirectional (Cho et al. 2014 §2.2) and bidirectional (Bahdanau et al. 2015 §3.2)."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from nmt.model.gru import PaperGRUCell, PaperGRUCellPair, reset_gru_, run_recurrence
from nmt.model.layers import reset_linear_


class GRUEncoder(nn.Module):
    """Reads embedded source words x_1..x_T and returns every state h_j and the final ones.

    cell='paper': Eq. 5–8 (reset before U); all input-side products W x_t for every t and both directions
    are one matrix product before the time loop. cell='cudnn': ``nn.GRU`` over a packed batch.
    layer_norm: Ba et al. 2016's layer normalisation inside the paper cells (`PaperGRUCell`).
    Padding never leaks into a state: padded steps carry the state over (paper) or are packed away (cudnn).
    """

    def __init__(
        self, *, emb_dim: int, hidden_dim: int, bidirectional: bool, cell: str, layer_norm: bool = False
    ) -> None:
        super().__init__()
        self.hidden_dim, self.bidirectional, self.cell_type = hidden_dim, bidirectional, cell
        directions = 2 if bidirectional else 1
        if cell == "paper":
            self.W = nn.Linear(emb_dim, directions * 3 * hidden_dim)  # [W_r; W_z; W] per direction, with biases
            self.cells = nn.ModuleList(PaperGRUCell(hidden_dim, layer_norm=layer_norm) for _ in range(directions))
        elif cell == "cudnn":
            self.rnn = nn.GRU(emb_dim, hidden_dim, batch_first=True, bidirectional=bidirectional)
        else:
            raise ValueError(f"unknown GRU cell {cell!r}: expected 'paper' or 'cudnn'")

    @torch.no_grad()
    def reset_parameters(self, std: float | None = None) -> None:
        """Input matrices from N(0, std²) and biases 0 (the papers), recurrent matrices orthogonal per gate block.
        std None: PyTorch's default (the paper cell's recurrent matrices stay orthogonal)."""
        if self.cell_type == "cudnn":
            reset_gru_(self.rnn, std)
            return
        reset_linear_(self.W, std)
        for cell in self.cells:
            cell.reset_parameters()

    def forward(self, x: Tensor, lengths: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """x (B, S, E) embedded source; lengths (B,); mask (B, S) bool, False at padding.

        Returns the states h (B, S, D·H) — for a bidirectional encoder h_j = [→h_j; ←h_j] — and the final
        forward state →h_T (B, H) (the state after each sentence's last real token).
        """
        B, S, _ = x.shape
        H = self.hidden_dim
        if self.cell_type == "cudnn":
            packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
            out, h_n = self.rnn(packed)
            h, _ = pad_packed_sequence(out, batch_first=True, total_length=S)
            return h, h_n[0]
        x_proj = self.W(x)  # (B, S, D·3H): one product for all steps and directions
        h0 = x.new_zeros(B, H)
        if self.bidirectional and all(type(cell) is PaperGRUCell for cell in self.cells):
            return self._both_directions(x_proj, h0, mask)
        forward = run_recurrence(self.cells[0], x_proj[..., : 3 * H], h0, mask)
        last = forward[:, -1]  # padded steps carry the state, so the last column is →h_T
        if not self.bidirectional:
            return forward, last
        backward = run_recurrence(self.cells[1], x_proj[..., 3 * H :], h0, mask, reverse=True)
        return torch.cat([forward, backward], dim=-1), last

    def _both_directions(self, x_proj: Tensor, h0: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Both directions in one time loop (`PaperGRUCellPair`): at step t the forward cell reads position t and the
        backward cell position S - 1 - t, whose inputs are stored reversed, time major: (2, S, B, ·)."""
        H = self.hidden_dim
        x_both = torch.stack([x_proj[..., : 3 * H], x_proj[..., 3 * H :].flip(1)]).transpose(1, 2)
        mask_both = torch.stack([mask, mask.flip(1)]).transpose(1, 2)
        pair = PaperGRUCellPair(self.cells[0], self.cells[1])
        states = run_recurrence(pair, x_both, h0.expand(2, -1, -1), mask_both)  # type: ignore[arg-type]
        forward, backward = states.transpose(1, 2).unbind(0)  # (B, S, H) each, the backward one reversed
        return torch.cat([forward, backward.flip(1)], dim=-1), forward[:, -1]
