"""`PairScorer` shares work between pairs (one pass per longest target, one encoding per source) without changing
a single bit of any pair's score."""

from __future__ import annotations

import pytest

from nmt.inference import Translator
from tests.factories import tiny_checkpoint

PAIRS = [
    ("ein Mann", "a man with a hat"),
    ("ein Mann", "a man"),
    ("ein Mann", "a"),
    ("ein Mann", ""),
    ("ein Mann", "a man with"),
    ("ein Mann", "one man"),
    ("zwei Hunde", "two dogs"),
    ("zwei Hunde", "two dogs"),  # a duplicate
    ("zwei Hunde", "two"),
    ("ein Mann", "a man with a hat"),
]


@pytest.mark.parametrize(("architecture", "cell"), [("rnnsearch", "paper"), ("rnnencdec", "cudnn")])
def test_prefixes_and_shared_sources_score_as_each_pair_alone_bit_for_bit(tmp_path, architecture, cell):
    translator = Translator.load(
        tiny_checkpoint(tmp_path, architecture=architecture, cell=cell, src_lang="de", tgt_lang="en"), device="cpu"
    )
    scorer = translator.scorer()
    sources, targets = zip(*PAIRS, strict=True)
    prepared = scorer.prepare(sources, targets)
    # one pass for each target that is no prefix (in pieces) of another target of its source
    pieces = {(s, tuple(translator.tokenizer.encode_tgt([t])[0])) for s, t in PAIRS}
    longest = {(s, t) for s, t in pieces if not any(s == s2 and len(t2) > len(t) and t2[: len(t)] == t
                                                     for s2, t2 in pieces)}  # fmt: skip
    assert len(prepared.runs) == len(longest) == 3  # "a man with a hat", "one man", "two dogs"
    together = scorer.run(prepared).logprob
    alone = [scorer.score([s], [t]).logprob[0] for s, t in PAIRS]
    assert together.tolist() == alone
