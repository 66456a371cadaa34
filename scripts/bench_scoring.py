"""Benchmark of `nmt score` on a real phrase table: phrase pairs scored per second and peak memory (RSS).

    python scripts/bench_scoring.py [--table PATH] [--lines N] [--times 10] [--memory-size tiny] [--device cpu]
                                    [--dtype float32|bfloat16|int8 (repeatable: each in turn)]

The model has the size of the Multi30k configs (RNNsearch, 256-d embeddings, 256 encoder units per
direction, 512 decoder and alignment units, 256 maxout units, 8000 joint SentencePiece pieces trained on
Multi30k de+en) with random weights: speed does not depend on the weights. Each run is a separate
``python -m nmt score`` process, so its peak RSS (``os.wait4``) is its own. For memory, the table is scored
once as it is and once repeated `times` times: flat memory means the two peaks are about the same.
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"  # read-only data beside the repository: the Moses files, Multi30k's German
MULTI30K = ROOT / "data" / "multi30k"  # Multi30k's English and French, shipped with the repository
DEFAULT_TABLE = SHARED / "smt" / "moses-regression-tests" / "multimodel-model1" / "phrase-table.gz"  # de→en


SIZES = {
    "multi30k": dict(emb_dim=256, encoder_dim=256, decoder_dim=512, attention_dim=512, maxout_units=256),
    "tiny": dict(emb_dim=16, encoder_dim=16, decoder_dim=24, attention_dim=16, maxout_units=12),
}


def random_checkpoint(path: Path, *, size: str = "multi30k", src_lang: str = "de", tgt_lang: str = "en") -> Path:
    """A random RNNsearch of the Multi30k configs' size (or a tiny one, to check memory quickly), with 8000
    joint SentencePiece pieces trained on Multi30k, saved as a checkpoint `nmt score` loads."""
    from nmt.checkpoint import checkpoint_metadata
    from nmt.data.tokenizer import PAD, Tokenizer, TokenizerConfig
    from nmt.model import NetworkConfig, build_model

    if path.exists():
        return path

    def lines(lang: str):
        directory = MULTI30K if lang in ("en", "fr") else SHARED / "multi30k"
        with gzip.open(directory / f"train.{lang}.gz", "rt", encoding="utf-8") as f:
            yield from (line.rstrip("\n") for line in f)

    tokenizer = Tokenizer.train(TokenizerConfig(joint=True, vocab_size=8000), lines(src_lang), lines(tgt_lang))
    network = NetworkConfig(architecture="rnnsearch", **SIZES[size])
    torch.manual_seed(0)
    model = build_model(
        network, src_vocab_size=tokenizer.src_vocab_size, tgt_vocab_size=tokenizer.tgt_vocab_size, pad_id=PAD
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
            "nmt": checkpoint_metadata(network, tokenizer.src_vocab_size, tokenizer.tgt_vocab_size, tokenizer),
        },
        path,
    )
    return path


def repeated_table(table: Path, times: int, out: Path) -> Path:
    """`table` concatenated `times` times (gzip, fast level), e.g. a 10× longer table for the memory check."""
    if not out.exists():
        data = gzip.decompress(table.read_bytes())
        with gzip.open(out, "wb", compresslevel=1) as f:
            for _ in range(times):
                f.write(data)
    return out


def bench_scoring(
    table: Path,
    *,
    checkpoint: Path,
    device: str = "cpu",
    dtype: str = "float32",
    threads: int = 0,
    batch_tokens: int | None = None,
    window: int | None = None,
    lines: int | None = None,
    work_dir: Path = Path("/tmp/nmt-bench"),
) -> dict:
    """Score `table` (its first `lines` lines when given) in a child process; return the line count, the
    wall time, pairs/s and the child's peak RSS in MiB."""
    work_dir.mkdir(parents=True, exist_ok=True)
    if lines is not None:
        head = work_dir / f"head{lines}.txt"
        with gzip.open(table, "rb") if table.suffix == ".gz" else open(table, "rb") as f:
            head.write_bytes(b"".join(itertools.islice(f, lines)))
        table = head
    out = work_dir / "scored.txt"
    command = [
        sys.executable,
        "-m",
        "nmt",
        "score",
        "--checkpoint",
        str(checkpoint),
        "--phrase-table",
        str(table),
        "--output",
        str(out),
        "--device",
        device,
        "--dtype",
        dtype,
        "--threads",
        str(threads),
    ]
    if batch_tokens is not None:
        command += ["--batch-tokens", str(batch_tokens)]
    if window is not None:
        command += ["--window", str(window)]
    start = time.perf_counter()
    child = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    stderr = child.stderr.read()
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise RuntimeError(f"nmt score failed ({child.returncode}):\n{stderr}")
    summary = stderr.strip().splitlines()[-1]
    count = int(summary.split(": ")[1].split(" lines")[0].replace(",", ""))
    out.unlink(missing_ok=True)
    return {
        "table": str(table),
        "lines": count,
        "seconds": round(seconds, 2),
        "pairs_per_s": round(count / seconds, 1),
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
        "device": device,
        "dtype": dtype,
        "threads": threads or torch.get_num_threads(),
        "summary": summary,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--table", type=Path, default=DEFAULT_TABLE)
    parser.add_argument("--lines", type=int, default=None, help="score only the table's first lines (speed run)")
    parser.add_argument("--times", type=int, default=10, help="the longer table repeats the table this many times")
    parser.add_argument("--size", choices=SIZES, default="multi30k", help="model size of the speed run")
    parser.add_argument(
        "--memory-size",
        choices=SIZES,
        default="multi30k",
        help="model size of the memory runs (tiny: the same pipeline, minutes instead of hours)",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", action="append", choices=["float32", "bfloat16", "int8"],
                        help="the speed run's --dtype, repeatable (default: float32)")  # fmt: skip
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/nmt-bench"))
    parser.add_argument("--keep", action="store_true", help="keep the work directory (checkpoints, long table)")
    args = parser.parse_args()
    options = dict(device=args.device, threads=args.threads, work_dir=args.work_dir)

    def checkpoint(size: str) -> Path:
        return random_checkpoint(args.work_dir / f"{size}-rnnsearch-deen.ckpt", size=size)

    results = {
        f"speed {dtype}": bench_scoring(
            args.table, checkpoint=checkpoint(args.size), lines=args.lines, dtype=dtype, **options
        )
        for dtype in args.dtype or ["float32"]
    }
    if args.times > 1:
        longer = repeated_table(args.table, args.times, args.work_dir / f"table-x{args.times}.gz")
        for label, table in (("memory x1", args.table), (f"memory x{args.times}", longer)):
            results[label] = bench_scoring(table, checkpoint=checkpoint(args.memory_size), **options)
    for label, result in results.items():
        print(json.dumps({"run": label, **result}))
    if not args.keep:
        shutil.rmtree(args.work_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
