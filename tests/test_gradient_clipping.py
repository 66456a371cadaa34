"""The module's own gradient clipping: clips by the total L2 norm as Lightning would, and logs that norm."""

import pytest
import torch

from nmt.training.module import TranslationModule
from tests.factories import tiny_network


def module_with_gradients(scale: float) -> TranslationModule:
    module = TranslationModule(network=tiny_network(), src_vocab_size=40, tgt_vocab_size=40)
    torch.manual_seed(0)
    for p in module.parameters():
        p.grad = torch.randn_like(p) * scale
    return module


def total_norm(module: TranslationModule) -> float:
    return torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in module.parameters()])).item()


@pytest.mark.parametrize("scale", [10.0, 1e-4])
def test_clips_to_the_threshold_and_logs_the_norm_before_clipping(scale: float, monkeypatch) -> None:
    module = module_with_gradients(scale)
    before = total_norm(module)
    logged = {}
    monkeypatch.setattr(module, "log", lambda name, value, **kw: logged.__setitem__(name, float(value)))
    module.configure_gradient_clipping(None, gradient_clip_val=1.0, gradient_clip_algorithm="norm")
    assert logged["train/grad_norm"] == pytest.approx(before, rel=1e-5)
    assert total_norm(module) == pytest.approx(min(before, 1.0), rel=1e-4)


def test_without_clipping_the_norm_is_logged_and_gradients_are_untouched(monkeypatch) -> None:
    module = module_with_gradients(10.0)
    before = [p.grad.clone() for p in module.parameters()]
    logged = {}
    monkeypatch.setattr(module, "log", lambda name, value, **kw: logged.__setitem__(name, float(value)))
    monkeypatch.setattr(module, "clip_gradients", lambda *a, **kw: None)  # what Lightning does with no clip value
    module.configure_gradient_clipping(None, gradient_clip_val=None, gradient_clip_algorithm=None)
    assert logged["train/grad_norm"] == pytest.approx(total_norm(module), rel=1e-5)
    assert all(torch.equal(a, p.grad) for a, p in zip(before, module.parameters(), strict=True))
