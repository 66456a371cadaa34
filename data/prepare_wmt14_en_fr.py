#!/usr/bin/env python
"""Fetch and lay out WMT'14 English–French as the paper configs expect (needs internet).

    python data/prepare_wmt14_en_fr.py [--target data/wmt14_en_fr] [--max-train N]

Writes gzip'd one-sentence-per-line files:
    train.{en,fr}.gz  the WMT'14 En–Fr training data (Hugging Face `wmt14`, config `fr-en`, ~40.8M pairs)
    dev.{en,fr}.gz    newstest2012 + newstest2013, the papers' development set (through sacrebleu)
    test.{en,fr}.gz   newstest2014, the papers' test set (through sacrebleu, the full 3,003-line set)

The papers trained on a 348M-word data-selected subset (Axelrod et al. 2011) that is not distributed;
`--max-train` caps the number of pairs instead, and both papers' length limits are applied at training time
by the configs (max_src_tokens / max_tgt_tokens).
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import subprocess
import sys
from pathlib import Path


def write_pairs(pairs, target: Path, name: str) -> int:
    n = 0
    with (
        gzip.open(target / f"{name}.en.gz.partial", "wt", encoding="utf-8") as en,
        gzip.open(target / f"{name}.fr.gz.partial", "wt", encoding="utf-8") as fr,
    ):
        for src, tgt in pairs:
            en.write(src.replace("\n", " ").strip() + "\n")
            fr.write(tgt.replace("\n", " ").strip() + "\n")
            n += 1
    for lang in ("en", "fr"):
        (target / f"{name}.{lang}.gz.partial").rename(target / f"{name}.{lang}.gz")
    return n


def sacrebleu_pairs(test_sets: list[str]):
    for test_set in test_sets:
        src = subprocess.run(
            ["sacrebleu", "-t", test_set, "-l", "en-fr", "--echo", "src"], check=True, capture_output=True, text=True
        ).stdout.splitlines()
        ref = subprocess.run(
            ["sacrebleu", "-t", test_set, "-l", "en-fr", "--echo", "ref"], check=True, capture_output=True, text=True
        ).stdout.splitlines()
        if len(src) != len(ref):
            sys.exit(f"{test_set}: {len(src)} source lines but {len(ref)} references")
        yield from zip(src, ref, strict=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", default=str(Path(__file__).parent / "wmt14_en_fr"))
    parser.add_argument("--max-train", type=int, default=None, help="keep only the first N training pairs")
    args = parser.parse_args()
    target = Path(args.target)
    target.mkdir(parents=True, exist_ok=True)

    import datasets

    train = datasets.load_dataset("wmt14", "fr-en", split="train", streaming=True)
    pairs = ((ex["translation"]["en"], ex["translation"]["fr"]) for ex in train)
    if args.max_train:
        pairs = itertools.islice(pairs, args.max_train)
    print("train:", write_pairs(pairs, target, "train"), "pairs")
    print("dev (newstest2012+2013):", write_pairs(sacrebleu_pairs(["wmt12", "wmt13"]), target, "dev"), "pairs")
    print("test (newstest2014):", write_pairs(sacrebleu_pairs(["wmt14/full"]), target, "test"), "pairs")


if __name__ == "__main__":
    main()
