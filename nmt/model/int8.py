"""int8 inference (``--dtype int8``): the linear maps of a trained model with int8 weights and int8 products.

Each ``nn.Linear`` W (N×K) becomes an `Int8Linear`: W is stored as int8 with one float32 scale per output row
(symmetric, s_n = max_k |W_nk| / 127), and every input row x is quantized the same way when it arrives
(dynamic quantization, one scale per row), so that

    y = (x_q W_qᵀ) · s_x · s_W + b

is one int8 × int8 → int32 product (``torch._int_mm``, a PyTorch core op on CPUs and CUDA) and one pass that scales
the int32 sums back to float32. The paper GRU cell's recurrent products [U_r; U_z] h and U (r ⊙ h) are computed the
same way (`Int8PaperGRUCell`), and so are the decoder's stacked step products (``nmt.model.layers.stacked_linear``,
the cuDNN cell's recurrent matrix among them). Everything else stays float32: the encoder
(``int8_inference_layer``), the embeddings, the attention's energies and softmax, the output's log-softmax and every
score.

Why this and not a library (their speed: docs/benchmarks.md, Fast inference on a CPU):
``torch.ao.quantization.quantize_dynamic`` (fbgemm/qnnpack) is deprecated in PyTorch 2.13 (it warns that it will be
removed), and its packed weights are opaque objects that ``torch.load(weights_only=True)`` refuses; torchao's int8
configurations pay only after ``torch.compile``. An int8 weight here is two plain tensors, so an exported int8
checkpoint is loaded by the same safe loader, and the output layer's rows can be cut to a vocabulary shortlist like
a float weight's.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nmt.model.gru import GRULayerNorm, PaperGRUCell, paper_step

INT8_MAX = 127


def quantize_rows(x: Tensor) -> tuple[Tensor, Tensor]:
    """Symmetric int8 quantization of each row of float32 x (..., K): (x_q int8 (..., K), scale float32 (..., 1)) with
    x ≈ x_q · scale. An all-zero row gets the smallest positive scale (any scale represents it). No clamp: the
    largest |x| of a row divided by its scale rounds to 127 at most."""
    scale = x.abs().amax(dim=-1, keepdim=True).div_(INT8_MAX).clamp_min_(torch.finfo(torch.float32).tiny)
    return (x / scale).round_().to(torch.int8), scale


class Int8Linear(nn.Module):
    """y = x Wᵀ + b with W (N×K) in int8 (a float32 scale per row) and x quantized per row as it comes."""

    def __init__(self, qweight: Tensor, scale: Tensor, bias: Tensor | None) -> None:
        super().__init__()
        self.in_features, self.out_features = qweight.shape[1], qweight.shape[0]
        self.register_buffer("qweight", qweight)  # (N, K) int8
        self.register_buffer("scale", scale)  # (N,) float32
        self.register_buffer("bias", bias)  # (N,) float32 or None

    @classmethod
    def from_float(cls, layer: nn.Linear) -> Int8Linear:
        return cls.from_weight(layer.weight, layer.bias)

    @classmethod
    def from_weight(cls, weight: Tensor, bias: Tensor | None = None) -> Int8Linear:
        """The layer x ↦ x Wᵀ + b of a float weight W (N, K) and bias b (N,)."""
        qweight, scale = quantize_rows(weight.detach().float())
        return cls(qweight, scale.squeeze(-1), None if bias is None else bias.detach().float().clone())

    @property
    def weight(self) -> Tensor:
        """W as float32 (its int8 values times their scales), for code that reads a layer's weight (stacked
        products, plots)."""
        return self.qweight.float() * self.scale.unsqueeze(-1)

    def to_float(self) -> nn.Linear:
        layer = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None, device=self.qweight.device)
        with torch.no_grad():
            layer.weight.copy_(self.weight)
            if self.bias is not None:
                layer.bias.copy_(self.bias)
        return layer

    def rows(self, ids: Tensor) -> Int8Linear:
        """The layer restricted to outputs `ids` (a vocabulary shortlist of the output layer)."""
        bias = None if self.bias is None else self.bias.index_select(0, ids)
        return Int8Linear(self.qweight.index_select(0, ids), self.scale.index_select(0, ids), bias)

    @classmethod
    def stack(cls, layers: list[Int8Linear]) -> Int8Linear:
        """x ↦ [W_1 x + b_1; W_2 x + b_2; …] as one layer (each row keeps its scale; a missing bias is zeros)."""
        bias = None
        if any(layer.bias is not None for layer in layers):
            bias = torch.cat([layer.scale.new_zeros(layer.out_features) if layer.bias is None else layer.bias
                              for layer in layers])  # fmt: skip
        return cls(torch.cat([layer.qweight for layer in layers]), torch.cat([layer.scale for layer in layers]), bias)

    def forward(self, x: Tensor) -> Tensor:
        shape = x.shape
        if x.device.type == "cuda" and (x.numel() // shape[-1] <= 16 or self.in_features % 8 or self.out_features % 8):
            # cuBLAS's int8 product wants more than 16 rows and sizes in multiples of 8
            return F.linear(x.float(), self.weight, self.bias)
        x_q, x_scale = quantize_rows(x.detach().reshape(-1, shape[-1]))  # inference only: no gradient
        y = torch._int_mm(x_q, self.qweight.t()).float().mul_(x_scale)  # not int32 * float: a slow mixed-type path
        y = y.mul_(self.scale) if self.bias is None else torch.addcmul(self.bias, y, self.scale, out=y)
        return y.view(*shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Int8PaperGRUCell(nn.Module):
    """``PaperGRUCell`` (Cho et al. 2014, Eqs. 5–8) with its recurrent products [U_r; U_z] h and U (r ⊙ h) in int8."""

    def __init__(self, U_rz: Int8Linear, U: Int8Linear, norm: GRULayerNorm | None = None) -> None:
        super().__init__()
        self.hidden_dim = U.out_features
        self.U_rz, self.U = U_rz, U
        self.norm = norm  # layer normalisation's gains and biases (Ba et al. 2016) stay float

    @classmethod
    def from_float(cls, cell: PaperGRUCell) -> Int8PaperGRUCell:
        return cls(Int8Linear.from_weight(cell.U_rz), Int8Linear.from_weight(cell.U), cell.norm)

    def to_float(self) -> PaperGRUCell:
        cell = PaperGRUCell(self.hidden_dim, layer_norm=self.norm is not None).to(self.U.qweight.device)
        with torch.no_grad():
            cell.U_rz.copy_(self.U_rz.weight)
            cell.U.copy_(self.U.weight)
        cell.norm = self.norm
        return cell

    @property
    def state_weight(self) -> Int8Linear:
        """[U_r; U_z] as the int8 layer itself, so that a decoding step stacks it with its own int8 products of
        h_{t-1} (``nmt.model.layers.stacked_linear``)."""
        return self.U_rz

    def forward(self, x_proj: Tensor, h: Tensor, h_proj: Tensor | None = None) -> Tensor:
        """`PaperGRUCell.forward` with int8 products."""
        if h_proj is None:
            h_proj = self.U_rz(h)
        return paper_step(x_proj, h, h_proj, self.U, None if self.norm is None else self.norm.gates())


def int8_inference_layer(name: str) -> bool:
    """Whether ``--dtype int8`` computes layer `name` (its qualified name in the model) in int8: every linear map but
    the encoder's. The encoder runs once per sentence over as few rows as the batch has sentences, where quantizing
    each input costs more than the int8 product saves (docs/benchmarks.md); the decoder's products run over every
    beam row."""
    return not name.startswith("encoder.")


def quantize_linear_layers_(
    model: nn.Module, where: Callable[[str], bool] = int8_inference_layer, prefix: str = ""
) -> nn.Module:
    """Replace every ``nn.Linear`` of `model` (float32 weights, eval mode) by its `Int8Linear`, and every paper GRU
    cell by its `Int8PaperGRUCell`, in place: those whose qualified name `where` accepts."""
    for name, child in model.named_children():
        qualified = prefix + name
        if isinstance(child, nn.Linear) and where(qualified):
            setattr(model, name, Int8Linear.from_float(child))
        elif isinstance(child, PaperGRUCell) and where(qualified):
            setattr(model, name, Int8PaperGRUCell.from_float(child))
        else:
            quantize_linear_layers_(child, where, qualified + ".")
    return model


def dequantize_linear_layers_(model: nn.Module) -> nn.Module:
    """The inverse of `quantize_linear_layers_` (each weight as its int8 values times their scales), in place."""
    for name, child in model.named_children():
        if isinstance(child, (Int8Linear, Int8PaperGRUCell)):
            setattr(model, name, child.to_float())
        else:
            dequantize_linear_layers_(child)
    return model
