"""The model a ``NetworkConfig`` describes, initialised as it says."""

from __future__ import annotations

from nmt.model.base import Seq2Seq
from nmt.model.config import NetworkConfig
from nmt.model.rnnencdec import RNNEncoderDecoder
from nmt.model.rnnsearch import RNNSearch

_ARCHITECTURES: dict[str, type[Seq2Seq]] = {"rnnencdec": RNNEncoderDecoder, "rnnsearch": RNNSearch}


def build_model(config: NetworkConfig, *, src_vocab_size: int, tgt_vocab_size: int, pad_id: int = 0) -> Seq2Seq:
    config.validate()
    cls = _ARCHITECTURES[config.architecture]
    model = cls(config=config, src_vocab_size=src_vocab_size, tgt_vocab_size=tgt_vocab_size, pad_id=pad_id)
    if config.init == "paper":
        model.init_weights(std=config.init_std, attention_std=config.attention_init_std)
    return model
