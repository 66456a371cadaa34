"""``model.network.tie_embeddings`` (Press & Wolf 2017): the target embedding matrix is the output matrix W_o. (Its
search steps against teacher forcing: ``tests/test_model.py``, over ``OPTIONS``.)"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nmt import Translator
from nmt.checkpoint import export_checkpoint
from nmt.model import NetworkConfig, build_model
from tests.factories import tiny_checkpoint, tiny_network
from tests.test_old_checkpoints import OLD_CHECKPOINT

ARCHS = ["rnnencdec", "rnnsearch"]
# The lookup's width (emb_rank, else emb_dim) equals W_o's input (output_rank, else maxout_units).
SHAPES = [dict(emb_dim=12, maxout_units=12), dict(emb_dim=12, emb_rank=5, maxout_units=7, output_rank=5)]


def output_matrix(model: torch.nn.Module) -> torch.Tensor:
    """W_o's factor with a row per target word."""
    W_o = model.output.W_o
    return W_o[1].weight if isinstance(W_o, torch.nn.Sequential) else W_o.weight


def tied_config(arch: str, shape: dict, **overrides) -> NetworkConfig:
    return tiny_network(
        arch, "paper", encoder_dim=10, decoder_dim=14, attention_dim=9, init_std=0.3, **shape | overrides
    )


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("shape", SHAPES)
def test_tied_embedding_is_one_parameter_that_both_uses_train(arch, shape):
    torch.manual_seed(0)
    tied = build_model(tied_config(arch, shape, tie_embeddings=True), src_vocab_size=25, tgt_vocab_size=18)
    assert output_matrix(tied) is tied.tgt_embed.lookup.weight
    assert sum(p is tied.tgt_embed.lookup.weight for p in tied.parameters()) == 1
    # The gradient of the shared matrix is the sum of the gradients of an untied copy's embedding and W_o.
    untied = build_model(tied_config(arch, shape), src_vocab_size=25, tgt_vocab_size=18)
    untied.load_state_dict(tied.state_dict())
    src, tgt = torch.randint(4, 25, (3, 6)), torch.randint(4, 18, (3, 5))
    for model in (tied, untied):
        model(src, torch.tensor([6, 6, 6]), tgt).log_softmax(-1).sum().backward()
    expected = untied.tgt_embed.lookup.weight.grad + output_matrix(untied).grad
    assert output_matrix(untied).grad.abs().sum() > 0
    torch.testing.assert_close(tied.tgt_embed.lookup.weight.grad, expected)


def test_tie_embeddings_refuses_shapes_that_differ_in_one_line():
    with pytest.raises(ValueError, match=r"emb_rank or emb_dim: 12\).*output_rank or maxout_units: 7\)") as error:
        build_model(NetworkConfig(emb_dim=12, maxout_units=7, tie_embeddings=True), src_vocab_size=9, tgt_vocab_size=9)
    assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match=r"emb_dim: 5\).*maxout_units: 7\)"):
        NetworkConfig(emb_dim=12, emb_rank=5, maxout_units=7, tie_embeddings=True).validate()


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "int8"])
def test_a_tied_checkpoint_loads_tied_and_its_export_translates(tmp_path: Path, dtype):
    path = tiny_checkpoint(tmp_path, tie_embeddings=True, emb_dim=12, maxout_units=12)
    assert torch.load(path, weights_only=True)["nmt"]["network"]["tie_embeddings"] is True  # the metadata has it
    translator = Translator.load(path, device="cpu")
    assert translator.model.tgt_embed.lookup.weight is output_matrix(translator.model)
    sources = ["A man sleeping in a green room on a couch.", "Two dogs play in the snow."]
    texts = [t.text for t in translator.translate(sources)]
    export_checkpoint(path, tmp_path / "exported.ckpt", dtype=dtype)
    exported = Translator.load(tmp_path / "exported.ckpt", device="cpu", dtype=dtype)
    exported_texts = [t.text for t in exported.translate(sources)]
    if dtype == "float32":  # the same weights, tied again
        assert exported.model.tgt_embed.lookup.weight is output_matrix(exported.model)
        assert exported_texts == texts
        scores = [translator.score(sources, texts).logprob, exported.score(sources, texts).logprob]
        assert torch.equal(torch.as_tensor(scores[0]), torch.as_tensor(scores[1]))
    assert len(exported_texts) == len(sources)


def test_an_old_checkpoint_loads_untied():
    translator = Translator.load(OLD_CHECKPOINT, device="cpu")
    assert translator.model.tgt_embed.lookup.weight is not output_matrix(translator.model)
