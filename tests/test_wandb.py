"""W&B tracking end to end: the real `nmt fit` CLI with the W&B logger switched on from the command line and
the real wandb client offline, then the offline run read back with the client's own reader
(`wandb leet inspect --json`, one JSON record per line of the run's .wandb transaction log)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from factories import MULTI30K, multi30k_lines

from nmt.cli import main

pytestmark = pytest.mark.slow  # trains or starts `nmt` subprocesses: not in the fast tier

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny.yaml"
VAL_LINES = 20


@pytest.fixture(scope="module")
def offline_run(tmp_path_factory):
    """One epoch of the tiny config on 300 pairs, logged to CSV and W&B. Returns (work dir, run dir, records)."""
    if not MULTI30K.is_dir():
        pytest.skip(f"Multi30k not found at {MULTI30K}")
    work = tmp_path_factory.mktemp("wandb")
    env = dict(
        os.environ,
        PYTHONPATH=str(ROOT),
        OMP_NUM_THREADS="1",
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        WANDB_MODE="offline",
        WANDB_DIR=str(work),
        # keep the client's settings, cache and artifact staging inside the test's directory
        WANDB_CONFIG_DIR=str(work / ".wandb-config"),
        WANDB_CACHE_DIR=str(work / ".wandb-cache"),
        WANDB_DATA_DIR=str(work / ".wandb-data"),
    )
    args = [
        "fit", "--config", str(TINY), "--data.data_dir", str(MULTI30K),
        "--data.train.limit", "300", "--data.val.limit", str(VAL_LINES), "--trainer.max_epochs", "1",
        "--data.val.src", "val.en.gz", "--data.val.tgt", "val.fr.gz",  # the references read below
        # the switch docs/training.md documents: add W&B next to the config's CSV logger
        "--trainer.logger+=lightning.pytorch.loggers.WandbLogger", "--trainer.logger.project", "nmt-test",
        "--trainer.callbacks+=nmt.training.callbacks.BestCheckpointArtifact",
    ]  # fmt: skip
    fit = subprocess.run(
        [sys.executable, "-m", "nmt", *args], cwd=work, env=env, capture_output=True, text=True, timeout=600
    )
    assert fit.returncode == 0, fit.stderr[-3000:]
    (run_dir,) = (work / "runs" / "tiny" / "wandb").glob("offline-run-*")  # under trainer.default_root_dir
    inspect = subprocess.run(
        [sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(run_dir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert inspect.returncode == 0, inspect.stderr[-2000:]
    records = [json.loads(line) for line in inspect.stdout.splitlines() if line.strip()]
    return work, run_dir, records


def of_type(records: list[dict], kind: str) -> list[dict]:
    return [r[kind] for r in records if r["type"] == kind]


def history(records: list[dict]) -> list[dict]:
    return [h["item"] for h in of_type(records, "history")]


def test_offline_run_is_a_real_syncable_run(offline_run):
    _, run_dir, records = offline_run
    assert len(list(run_dir.glob("run-*.wandb"))) == 1  # what `wandb sync RUN_DIR` uploads
    (run,) = of_type(records, "run")
    assert run["project"] == "nmt-test" and run["telemetry"]["feature"]["offline"]
    assert of_type(records, "exit"), "the run was finished cleanly"


def test_metrics_are_in_the_history(offline_run, tmp_path, capsys):
    work, _, records = offline_run
    keys = set().union(*history(records))
    expected = {
        "train/loss", "train/ppl", "train/grad_norm", "train/tgt_tokens_per_s", "lr-Adam", "memory/cpu_rss",
        "val/loss", "val/ppl", "val/bleu", "val/chrf", "trainer/global_step",
    }  # fmt: skip
    assert expected <= keys, expected - keys
    (validation,) = [h for h in history(records) if "val/bleu" in h]
    # the scores `nmt evaluate` gives the best checkpoint (that of this one validation) on the validation sentences
    # (after one epoch of 300 pairs the model still ends every translation at once: both are 0 here)
    src, ref = tmp_path / "val.en", tmp_path / "val.fr"
    src.write_text("".join(line + "\n" for line in multi30k_lines("val", "en", VAL_LINES)), encoding="utf-8")
    ref.write_text("".join(line + "\n" for line in multi30k_lines("val", "fr", VAL_LINES)), encoding="utf-8")
    best = work / "runs" / "tiny" / "checkpoints" / "best.ckpt"
    options = ["--src", str(src), "--ref", str(ref), "--beam-size", "1", "--threads", "1", "--json"]
    assert main(["evaluate", "--checkpoint", str(best), *options]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["sentences"] == VAL_LINES
    assert validation["val/bleu"] == pytest.approx(report["bleu"]["score"])
    assert validation["val/chrf"] == pytest.approx(report["chrf"]["score"])


def test_resolved_config_is_the_run_config(offline_run):
    _, _, records = offline_run
    config: dict = {}
    for update in of_type(records, "config"):
        config.update(update.get("update", {}))
    assert config["model"]["network"]["architecture"] == "rnnsearch"
    assert config["data"]["train"]["limit"] == 300  # command-line overrides included
    assert config["trainer"]["max_epochs"] == 1
    assert config["optimizer"]["class_path"] == "torch.optim.Adam"


def test_sample_translations_table(offline_run):
    _, run_dir, records = offline_run
    (logged,) = [h for h in history(records) if "val/samples._type" in h]
    assert logged["val/samples._type"] == "table-file"
    assert (logged["val/samples.nrows"], logged["val/samples.ncols"]) == (8, 4)
    table = json.loads((run_dir / "files" / logged["val/samples.path"]).read_text())
    assert table["columns"] == ["index", "source", "reference", "hypothesis"]
    sources, references = multi30k_lines("val", "en", VAL_LINES), multi30k_lines("val", "fr", VAL_LINES)
    indices = [row[0] for row in table["data"]]
    assert indices == sorted(set(indices)) and len(indices) == 8
    for index, source, reference, hypothesis in table["data"]:
        assert reference == references[index]
        assert source == sources[index]  # back from its SentencePiece pieces
        assert isinstance(hypothesis, str)


def test_attention_heatmaps_are_images(offline_run):
    _, run_dir, records = offline_run
    (logged,) = [h for h in history(records) if "val/attention._type" in h]
    assert logged["val/attention.count"] == 3 and logged["val/attention.format"] == "png"
    assert logged["val/attention.width"] == logged["val/attention.height"] == 800  # 8 × 8 inches at 100 dpi
    for name in logged["val/attention.filenames"]:
        assert (run_dir / "files" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_best_checkpoint_is_a_model_artifact(offline_run):
    _, _, records = offline_run
    (model,) = [a for a in of_type(records, "artifact") if a["type"] == "model"]
    assert set(model["aliases"]) == {"best", "latest"}
    assert json.loads(model["metadata"])["original_filename"] == "best.ckpt"
    assert [entry["path"] for entry in model["manifest"]["contents"]] == ["model.ckpt"]


def test_csv_logger_still_writes_and_gets_the_samples_on_disk(offline_run):
    work, _, _ = offline_run
    (version,) = (work / "runs" / "tiny" / "logs").glob("version_*")
    assert (version / "metrics.csv").read_text().startswith("epoch,")
    (samples,) = (version / "samples").glob("step_*.tsv")
    lines = samples.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "index\tsource\treference\thypothesis" and len(lines) == 9
    assert len(list((version / "attention").glob("step_*_*.png"))) == 3
