"""``model.network.embedding_dropout`` and ``context_dropout``: dropout on the embeddings and on the source context,
apart from ``dropout`` (embeddings and maxout output), whose meaning stays."""

from __future__ import annotations

import pytest
import torch

from nmt.model import NetworkConfig, build_model
from tests.factories import tiny_network

ARCHS = ["rnnencdec", "rnnsearch"]


def rates(model: torch.nn.Module) -> tuple[float, float, float | None]:
    """The dropout rates of the embeddings, of the maxout output and of the source context (None: no dropout)."""
    context = None if model.context_dropout is None else model.context_dropout.p
    return model.embed_dropout.p, model.output.dropout.p, context


@pytest.mark.parametrize("arch", ARCHS)
def test_each_rate_drops_what_its_key_says(arch):
    build = lambda **o: build_model(tiny_network(arch, **o), src_vocab_size=20, tgt_vocab_size=20)  # noqa: E731
    assert rates(build(dropout=0.3)) == (0.3, 0.3, None)
    assert rates(build(dropout=0.3, embedding_dropout=0.0)) == (0.0, 0.3, None)
    assert rates(build(embedding_dropout=0.4, context_dropout=0.5)) == (0.4, 0.0, 0.5)


@pytest.mark.parametrize("arch", ARCHS)
def test_embedding_dropout_equal_to_dropout_trains_as_dropout_alone(arch):
    outputs = []
    for options in ({"dropout": 0.3}, {"dropout": 0.3, "embedding_dropout": 0.3}):
        torch.manual_seed(0)
        model = build_model(tiny_network(arch, **options), src_vocab_size=20, tgt_vocab_size=20).train()
        outputs.append(model(torch.randint(4, 20, (3, 6)), torch.tensor([6, 5, 4]), torch.randint(4, 20, (3, 5))))
    assert torch.equal(*outputs)


@pytest.mark.parametrize("arch", ARCHS)
def test_context_dropout_drops_the_source_context_in_training_only(arch):
    torch.manual_seed(0)
    plain = build_model(tiny_network(arch), src_vocab_size=20, tgt_vocab_size=20)
    dropped = build_model(tiny_network(arch, context_dropout=0.5), src_vocab_size=20, tgt_vocab_size=20)
    dropped.load_state_dict(plain.state_dict())
    src, lengths = torch.randint(4, 20, (4, 6)), torch.tensor([6, 6, 6, 6])
    context = (lambda enc: enc.c) if arch == "rnnencdec" else (lambda enc: enc.h)
    expected = context(plain.eval().encode(src, lengths))
    assert torch.equal(context(dropped.eval().encode(src, lengths)), expected)  # evaluation: no dropout
    trained = context(dropped.train().encode(src, lengths))
    kept = trained != 0
    assert 0 < kept.float().mean() < 1
    torch.testing.assert_close(trained[kept], expected[kept] * 2)  # the kept units scaled by 1 / (1 − p)


@pytest.mark.parametrize("key", ["dropout", "embedding_dropout", "context_dropout"])
def test_a_rate_outside_0_to_1_is_one_line(key):
    with pytest.raises(ValueError, match=rf"^model.network.{key}: 1.0 is not a dropout rate \(0 ≤ p < 1\)$"):
        NetworkConfig(**{key: 1.0}).validate()
