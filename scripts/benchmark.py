"""Speed and memory of `nmt` on Multi30k En→Fr: prints one JSON object per measurement.

    python scripts/benchmark.py                     # everything below, each in its own process
    python scripts/benchmark.py train --config configs/multi30k_en_fr_attention.yaml [--steps 60 --warmup 10]
    python scripts/benchmark.py translate --checkpoint CKPT [--shortlist lex.tsv] [--onmt-checkpoint PT] [--repeat 3]
    python scripts/benchmark.py score               # phrase pairs/s and peak RSS (scripts/bench_scoring.py)
    python scripts/benchmark.py memory [--epochs 3] [--precision bf16-mixed]   # training RSS epoch by epoch
    python scripts/benchmark.py scale [--scale 20 --steps 200]   # preprocessing and training RSS, 1x vs 20x
    python scripts/benchmark.py ddp [--steps 200]   # tiny.yaml steps/s: 1 process vs 2 DDP processes (gloo)

train: the real `nmt fit` path (LightningCLI, the config's data pipeline, model and optimizer) for
warmup + steps updates without validation, logging or checkpoints; target tokens/s (non-padding target
tokens, EOS included, BOS not — the peers' definition) over the updates after the warm-up.
translate: the whole `nmt translate` command, beam 5, on test_2016_flickr.en (1,000 sentences): sentences/s
(median of --repeat runs, taken in rotation) and BLEU, in float32, bfloat16 and int8, each also with
--shortlist when a table is given, and OpenNMT-py's `decode_speed.sh` (../shared/bench/peers) on
--onmt-checkpoint, back to back. Threads are pinned (--threads); other measurements report their peak RSS.
memory: a real training run of the config (validation included, no checkpoints or logs) for --epochs epochs, in
float32 and in bf16-mixed (or --precision): the resident memory after each epoch and its peak within each, so
that growth over a run shows (after epoch 2 it should stay within a few per cent).
scale: Multi30k and a corpus `--scale` times larger (its training files repeated, built in a temp dir),
each preprocessed from scratch (SentencePiece training, tokenization into Arrow; time and peak RSS), then
trained for --steps updates with the preprocessed data (peak RSS, and at the end its anonymous and
file-backed parts): the corpus is memory-mapped and only a compact length array per side is in memory, so
the anonymous part hardly grows with the corpus; the file-backed part does, as training touches more of the
mapped Arrow file (page cache, which the kernel reclaims under memory pressure).
ddp: tiny.yaml on the whole Multi30k training set for --steps updates after --warmup, one process (1 and
--threads threads) and 2 DDP processes of 1 thread each; a DDP step consumes one batch per process.
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MULTI30K = ROOT / "data" / "multi30k"  # the English and French text ships with the repository
PEERS_HARNESS = ROOT.parent / "shared" / "bench" / "peers"  # OpenNMT-py and JoeyNMT, set up by its setup.sh
CONFIGS = {
    "rnnsearch": ROOT / "configs" / "multi30k_en_fr_attention.yaml",
    "rnnencdec": ROOT / "configs" / "multi30k_en_fr_cho.yaml",
}


def peak_rss_mib() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def rss_now_mib() -> dict[str, float]:
    """This process's resident memory now, split into anonymous (heap, tensors) and file-backed pages (code,
    and the memory-mapped Arrow corpus: page cache the kernel can drop). Linux only; {} elsewhere."""
    try:
        with open("/proc/self/status") as f:
            status = dict(line.split(":", 1) for line in f)
    except OSError:
        return {}
    return {key: round(int(status[key].split()[0]) / 1024, 1) for key in ("RssAnon", "RssFile") if key in status}


def bench_train(config: Path, *, steps: int, warmup: int, data_dir: Path, overrides: list[str]) -> dict | None:
    import lightning as L
    import torch

    from nmt.training.cli import train_cli

    class StepTimer(L.Callback):
        def __init__(self) -> None:
            self.start = self.end = 0.0
            self.tokens = 0

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            if trainer.global_step == warmup:
                self.start = time.perf_counter()
            elif trainer.global_step > warmup:
                self.tokens += batch.num_tgt_tokens
                self.end = time.perf_counter()

    cli = train_cli(
        [
            "--config",
            str(config),
            "--data.data_dir",
            str(data_dir),
            "--trainer.max_steps",
            str(warmup + steps),
            "--trainer.max_epochs",
            "-1",
            "--trainer.limit_val_batches",
            "0",
            "--trainer.num_sanity_val_steps",
            "0",
            "--trainer.logger",
            "false",
            "--trainer.enable_checkpointing",
            "false",
            "--trainer.callbacks=[]",
            "--trainer.enable_progress_bar",
            "false",
            "--trainer.enable_model_summary",
            "false",
            "--lr_scheduler",
            "null",
            *overrides,
        ],
        run=False,
    )
    timer = StepTimer()
    cli.trainer.callbacks.append(timer)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    if not cli.trainer.is_global_zero:
        return None  # every DDP rank runs this; rank 0 reports (its tokens x the world size)
    seconds = timer.end - timer.start
    network = cli.model.network_config
    world = cli.trainer.world_size
    return {
        "bench": "train",
        "config": str(config),
        "architecture": network.architecture,
        "cell": network.cell,
        "precision": str(cli.trainer.precision),
        "threads": torch.get_num_threads(),
        "timed_steps": steps,
        "warmup_steps": warmup,
        "processes": world,
        "tgt_tokens_per_step": round(timer.tokens * world / steps, 1),
        "tgt_tokens_per_s": round(timer.tokens * world / seconds, 1),
        "steps_per_s": round(steps / seconds, 3),
        "parameters": sum(p.numel() for p in cli.model.parameters()),
        "peak_rss_mib": peak_rss_mib(),
        "rss_at_end_mib": rss_now_mib(),
    }


def bench_translate(
    checkpoint: Path,
    *,
    shortlist: Path | None,
    beam_size: int,
    lines: int,
    threads: int,
    repeat: int,
    dtypes: list[str],
    onmt_checkpoint: Path | None,
    peers: Path,
) -> list[dict]:
    """The whole `nmt translate` command (start-up, loading, reading, decoding, writing) on the first `lines` lines of
    test_2016_flickr, beam `beam_size`, for each dtype with and without `shortlist`, and OpenNMT-py's
    `decode_speed.sh` on `onmt_checkpoint`, each `repeat` times in rotation (so that a noisy minute spreads over
    all of them); the median wall time, sentences/s and BLEU of each."""
    import sacrebleu

    work = Path(tempfile.mkdtemp(prefix="nmt-bench-translate-"))
    source, output = work / "test.en", work / "hyp.fr"
    with gzip.open(MULTI30K / "test_2016_flickr.en.gz", "rt", encoding="utf-8") as f:
        source.write_text("".join(itertools.islice(f, lines)), encoding="utf-8")
    with gzip.open(MULTI30K / "test_2016_flickr.fr.gz", "rt", encoding="utf-8") as f:
        references = [line.rstrip("\n") for line in itertools.islice(f, lines)]
    runs: dict[str, list[str] | None] = {}
    for dtype in dtypes:
        for table in [None, shortlist] if shortlist else [None]:
            extra = [] if table is None else ["--shortlist", str(table)]
            runs[f"nmt {dtype}" + ("" if table is None else " + shortlist")] = [
                sys.executable, "-m", "nmt", "translate", "--checkpoint", str(checkpoint), "--input", str(source),
                "--output", str(output), "--beam-size", str(beam_size), "--dtype", dtype, "--threads", str(threads),
                "--no-progress", *extra,
            ]  # fmt: skip
    if onmt_checkpoint is not None:
        runs["OpenNMT-py"] = None
    env = dict(os.environ, PEERS=str(peers), THREADS=str(threads), NSENT=str(lines))
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    bleu: dict[str, float] = {}
    for _ in range(repeat):
        for name, command in runs.items():
            if command is None:  # the peers' harness: its own RESULT line
                done = subprocess.run(
                    ["bash", str(PEERS_HARNESS / "decode_speed.sh"), "onmt", str(onmt_checkpoint), str(lines)],
                    env=env, capture_output=True, text=True, check=True,
                )  # fmt: skip
                result = json.loads(done.stdout.strip().splitlines()[-1].split("RESULT ", 1)[1])
                seconds[name].append(result["wall_s"])
                bleu[name] = result["bleu"]
                continue
            start = time.perf_counter()
            subprocess.run(command, cwd=ROOT, check=True, stderr=subprocess.DEVNULL)
            seconds[name].append(time.perf_counter() - start)
            hypotheses = output.read_text(encoding="utf-8").splitlines()
            bleu[name] = sacrebleu.corpus_bleu(hypotheses, [references]).score
    shutil.rmtree(work, ignore_errors=True)
    results = []
    for name, times in seconds.items():
        wall = statistics.median(times)
        results.append({
            "bench": "translate", "run": name, "sentences": lines, "beam_size": beam_size, "threads": threads,
            "wall_s": round(wall, 2), "sents_per_s": round(lines / wall, 1), "bleu": round(bleu[name], 2),
            "runs_s": [round(t, 2) for t in times],
        })  # fmt: skip
    if onmt_checkpoint is not None:
        onmt = next(r for r in results if r["run"] == "OpenNMT-py")["sents_per_s"]
        for r in results:
            r["x_onmt"] = round(r["sents_per_s"] / onmt, 2)
    return results


def bench_prepare(config: Path, *, data_dir: Path, overrides: list[str]) -> dict:
    """Preprocessing from scratch (the config's cache_dir should be empty): tokenizer, then Arrow token ids."""
    from nmt.training.cli import train_cli

    cli = train_cli(["--config", str(config), "--data.data_dir", str(data_dir), *overrides], run=False)
    datamodule = cli.datamodule
    start = time.perf_counter()
    datamodule.prepare_data()
    prepare_s = time.perf_counter() - start
    datamodule.setup("fit")  # memory-maps the splits and computes the length arrays the sampler needs
    src_lengths, tgt_lengths = datamodule._lengths["train"]
    return {
        "bench": "prepare",
        "config": str(config),
        "data_dir": str(data_dir),
        "train_pairs": len(src_lengths),
        "prepare_s": round(prepare_s, 2),
        "setup_s": round(time.perf_counter() - start - prepare_s, 2),
        "length_arrays_mib": round((src_lengths.nbytes + tgt_lengths.nbytes) / 2**20, 2),
        "peak_rss_mib": peak_rss_mib(),
    }


def scaled_multi30k(target: Path, scale: int) -> Path:
    """Multi30k with its training files repeated `scale` times (gzip members concatenated), val/test linked."""
    target.mkdir(parents=True, exist_ok=True)
    for path in MULTI30K.glob("*.gz"):
        out = target / path.name
        if path.name.startswith("train."):
            out.write_bytes(path.read_bytes() * scale)  # a gzip file of several members is one stream
        elif not out.exists():
            out.symlink_to(path)
    return target


def bench_memory(*, config: Path, scale: int, steps: int, warmup: int, threads: int, overrides: list[str]) -> None:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="nmt-bench-memory-") as tmp:
        results = {}
        for factor in (1, scale):
            data_dir = MULTI30K if factor == 1 else scaled_multi30k(Path(tmp) / f"multi30k-x{factor}", factor)
            cache = ["--override", f"--data.cache_dir {tmp}/cache-x{factor}"] + [
                x for o in overrides for x in ("--override", o)
            ]
            common = ["--config", str(config), "--data-dir", str(data_dir), *cache]
            prepared = in_child(["prepare", *common], threads)
            trained = in_child(["train", *common, "--steps", str(steps), "--warmup", str(warmup)], threads)
            results[factor] = {"scale": factor, "prepare": prepared, "train": trained}
            print(json.dumps(results[factor]), flush=True)
        small, large = results[1]["train"]["peak_rss_mib"], results[scale]["train"]["peak_rss_mib"]
        summary = {"bench": "memory", "scale": scale, "train_peak_rss_mib": [small, large]}
        summary["train_rss_ratio"] = round(large / small, 3)
        # The part that is the process's own (not page cache of the memory-mapped corpus), after training.
        summary["train_rss_anon_at_end_mib"] = [
            results[f]["train"]["rss_at_end_mib"].get("RssAnon") for f in (1, scale)
        ]
        print(json.dumps(summary), flush=True)


def bench_epochs(config: Path, *, epochs: int, data_dir: Path, overrides: list[str]) -> dict:
    """Resident memory of a real `nmt fit` run, epoch by epoch (validation included)."""
    import gc
    import tempfile

    import lightning as L
    import torch

    from nmt.training.callbacks import rss_bytes
    from nmt.training.cli import train_cli

    class EpochMemory(L.Callback):
        def __init__(self) -> None:
            self.peaks: list[float] = []
            self.ends: list[float] = []
            self.peak = 0

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            self.peak = max(self.peak, rss_bytes())

        def on_train_epoch_end(self, trainer, pl_module) -> None:
            now = rss_bytes()
            self.ends.append(round(now / 2**20, 1))
            self.peaks.append(round(max(self.peak, now) / 2**20, 1))
            self.peak = 0
            # One line per epoch on stderr, so that a long run that is stopped still tells its story; the
            # object and tensor counts tell a leak (they grow) from fragmentation (they stay).
            objects = gc.get_objects()
            tensors = sum(1 for o in objects if isinstance(o, torch.Tensor))
            epoch = {"epoch": trainer.current_epoch, "step": trainer.global_step, "rss_mib": self.ends[-1]}
            epoch |= {"peak_mib": self.peaks[-1], **rss_now_mib(), "objects": len(objects), "tensors": tensors}
            print(json.dumps(epoch), file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="nmt-bench-epochs-") as tmp:
        cli = train_cli(
            [
                "--config", str(config), "--data.data_dir", str(data_dir), "--trainer.default_root_dir", tmp,
                "--trainer.max_epochs", str(epochs), "--trainer.max_steps", "-1", "--trainer.logger", "false",
                "--trainer.enable_checkpointing", "false", "--trainer.callbacks=[]",
                "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false", *overrides,
            ],
            run=False,
        )  # fmt: skip
        monitor = EpochMemory()
        cli.trainer.callbacks.append(monitor)
        start = time.perf_counter()
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    ends = monitor.ends
    return {
        "bench": "memory",
        "config": str(config),
        "precision": str(cli.trainer.precision),
        "threads": torch.get_num_threads(),
        "epochs": len(ends),
        "steps": cli.trainer.global_step,
        "seconds": round(time.perf_counter() - start, 1),
        "rss_after_epoch_mib": ends,
        "peak_rss_in_epoch_mib": monitor.peaks,
        # The bound the issue tracker asked for: RSS after the last epoch against RSS after epoch 2.
        "growth_after_epoch_2": round(ends[-1] / ends[1] - 1, 4) if len(ends) >= 2 else None,
        "peak_rss_mib": peak_rss_mib(),
    }


def bench_ddp(*, steps: int, warmup: int, threads: int) -> None:
    tiny = ROOT / "configs" / "tiny.yaml"
    common = ["train", "--config", str(tiny), "--steps", str(steps), "--warmup", str(warmup)]
    whole = ["--override", "--data.train.limit null", "--override", "--data.cache_dir /tmp/nmt-bench/cache"]
    runs = [(1, 1), (1, threads), (2, 1)] if threads > 1 else [(1, 1), (2, 1)]
    for processes, per_process in runs:
        ddp = ["--override", f"--trainer.devices {processes}", "--override", "--trainer.accelerator cpu"]
        if processes > 1:
            ddp += ["--override", "--trainer.strategy ddp"]
        result = in_child([*common, *whole, *ddp], per_process)
        print(json.dumps({**result, "bench": "ddp", "threads_per_process": per_process}), flush=True)


def in_child(args: list[str], threads: int) -> dict:
    """Run one measurement in a fresh process (its own peak RSS), threads pinned; returns its JSON."""
    env = dict(
        os.environ,
        OMP_NUM_THREADS=str(threads),
        MKL_NUM_THREADS=str(threads),
        HF_DATASETS_OFFLINE="1",
        HF_HUB_OFFLINE="1",
        PYTHONPATH=str(ROOT),
    )
    # stderr goes straight through: the child's warnings, errors and per-epoch progress lines are seen live.
    result = subprocess.run(
        [sys.executable, __file__, *args, "--threads", str(threads)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    if result.returncode != 0:
        raise SystemExit(f"benchmark {' '.join(args)} failed (exit {result.returncode}; its messages are above)")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "what",
        nargs="?",
        default="all",
        choices=["all", "train", "translate", "score", "memory", "scale", "ddp", "prepare", "epochs"],
    )
    parser.add_argument("--config", type=Path, help="train: the config (default: both Multi30k configs)")
    parser.add_argument("--steps", type=int, default=60, help="train: timed updates")
    parser.add_argument("--warmup", type=int, default=10, help="train: untimed updates first")
    parser.add_argument("--data-dir", type=Path, default=MULTI30K)
    parser.add_argument("--override", action="append", default=[], help="train: extra `nmt fit` option, repeatable")
    parser.add_argument("--checkpoint", type=Path, help="translate: a trained checkpoint (required)")
    parser.add_argument("--shortlist", type=Path, help="translate: also each dtype with this `nmt shortlist` table")
    parser.add_argument("--onmt-checkpoint", type=Path, help="translate: also OpenNMT-py's decode_speed.sh on it")
    parser.add_argument("--peers", type=Path, default=Path(os.environ.get("PEERS", "/tmp/nmt-peers")),
                        help="translate: where the peers' setup.sh put its venvs and data")  # fmt: skip
    parser.add_argument("--repeat", type=int, default=3, help="translate: runs of each, the median is reported")
    parser.add_argument("--beam-size", type=int, default=5)
    parser.add_argument("--lines", type=int, default=1000, help="translate: test sentences")
    parser.add_argument(
        "--dtype", action="append", choices=["float32", "bfloat16", "int8"],
        help="translate: an inference dtype, repeatable (default: all three)",
    )  # fmt: skip
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--scale", type=int, default=20, help="scale: how many times Multi30k is repeated")
    parser.add_argument("--epochs", type=int, default=3, help="memory: training epochs")
    parser.add_argument(
        "--precision", action="append", help="memory: the trainer precision (default: 32-true and bf16-mixed)"
    )
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    overrides = [x for o in args.override for x in o.split(maxsplit=1)]
    if args.what == "train" and args.config is not None:
        result = bench_train(
            args.config, steps=args.steps, warmup=args.warmup, data_dir=args.data_dir, overrides=overrides
        )
        if result is not None:
            print(json.dumps(result))
        return
    if args.what == "prepare":
        print(json.dumps(bench_prepare(args.config, data_dir=args.data_dir, overrides=overrides)))
        return
    if args.what == "epochs":  # one run of `memory`, in this process
        config = args.config or CONFIGS["rnnsearch"]
        result = bench_epochs(config, epochs=args.epochs, data_dir=args.data_dir, overrides=overrides)
        print(json.dumps(result))
        return
    if args.what == "memory":
        config = args.config or CONFIGS["rnnsearch"]
        for precision in args.precision or ["32-true", "bf16-mixed"]:
            run = ["epochs", "--config", str(config), "--epochs", str(args.epochs), "--data-dir", str(args.data_dir)]
            extra = [x for o in [*args.override, f"--trainer.precision {precision}"] for x in ("--override", o)]
            print(json.dumps(in_child([*run, *extra], args.threads)), flush=True)
        return
    if args.what == "scale":
        config = args.config or CONFIGS["rnnsearch"]
        bench_memory(
            config=config, scale=args.scale, steps=args.steps, warmup=args.warmup, threads=args.threads,
            overrides=args.override,
        )  # fmt: skip
        return
    if args.what == "ddp":
        bench_ddp(steps=args.steps, warmup=args.warmup, threads=args.threads)
        return
    common = ["--steps", str(args.steps), "--warmup", str(args.warmup), "--data-dir", str(args.data_dir)]
    if args.what in ("all", "train"):
        for config in CONFIGS.values():
            print(json.dumps(in_child(["train", "--config", str(config), *common], args.threads)), flush=True)
    if args.what == "translate" and args.checkpoint is None:
        raise SystemExit("translate: give --checkpoint (a trained model: an untrained one decodes garbage lengths)")
    if args.what == "all" and args.checkpoint is None:
        print("benchmark.py: translate skipped (it needs a trained --checkpoint)", file=sys.stderr)
    elif args.what in ("all", "translate"):
        results = bench_translate(
            args.checkpoint,
            shortlist=args.shortlist,
            beam_size=args.beam_size,
            lines=args.lines,
            threads=args.threads,
            repeat=args.repeat,
            dtypes=args.dtype or ["float32", "bfloat16", "int8"],
            onmt_checkpoint=args.onmt_checkpoint,
            peers=args.peers,
        )
        for result in results:
            print(json.dumps(result), flush=True)
    if args.what in ("all", "score"):
        subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "bench_scoring.py"), "--threads", str(args.threads)],
            check=True,
            cwd=ROOT,
        )


if __name__ == "__main__":
    main()
