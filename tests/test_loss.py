"""The fused label-smoothed cross-entropy equals PyTorch's in value and gradient."""

import pytest
import torch
import torch.nn.functional as F

from nmt.training.loss import smoothed_cross_entropy


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.3])
@pytest.mark.parametrize("scale", [1.0, 30.0])  # 30: logits far from 0, where a naive exp would overflow
def test_value_and_gradient_equal_pytorch(smoothing: float, scale: float) -> None:
    torch.manual_seed(0)
    logits = (torch.randn(37, 101, dtype=torch.float64) * scale).requires_grad_()
    target = torch.randint(0, 101, (37,))
    expected = F.cross_entropy(logits, target, reduction="sum", label_smoothing=smoothing)
    (expected_grad,) = torch.autograd.grad(expected * 0.7, logits)
    ours = smoothed_cross_entropy(logits, target, smoothing)
    (ours_grad,) = torch.autograd.grad(ours * 0.7, logits)
    torch.testing.assert_close(ours, expected)
    torch.testing.assert_close(ours_grad, expected_grad)


def test_gradient_flows_through_the_graph_below() -> None:
    torch.manual_seed(1)
    features = torch.randn(5, 8, requires_grad=True)
    weight = torch.randn(11, 8)
    target = torch.tensor([0, 3, 10, 3, 7])
    expected_grad = torch.autograd.grad(F.cross_entropy(features @ weight.T, target, reduction="sum"), features)[0]
    ours_grad = torch.autograd.grad(smoothed_cross_entropy(features @ weight.T, target), features)[0]
    torch.testing.assert_close(ours_grad, expected_grad)


def test_a_second_backward_through_the_same_graph_is_refused() -> None:
    logits = torch.randn(3, 5, requires_grad=True)
    loss = smoothed_cross_entropy(logits, torch.tensor([1, 2, 3]), 0.1)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="one backward pass"):
        loss.backward()


@pytest.mark.parametrize("smoothing", [-0.1, 1.0])
def test_smoothing_out_of_range(smoothing: float) -> None:
    with pytest.raises(ValueError, match="label smoothing"):
        smoothed_cross_entropy(torch.zeros(1, 3), torch.tensor([0]), smoothing)
