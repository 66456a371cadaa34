"""The real `nmt fit` CLI end to end on real Multi30k lines: training lowers the validation loss, checkpoints
carry everything inference needs, resuming continues, configs round-trip through --print_config."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from factories import MULTI30K

from nmt.checkpoint import load_translator
from nmt.cli import main as nmt_main

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
TINY = ROOT / "configs" / "tiny.yaml"


def run_nmt(args: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "nmt", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def metrics(run_dir: Path) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []
    for path in sorted(run_dir.glob("logs/version_*/metrics.csv")):
        with open(path) as f:
            rows.extend(csv.DictReader(f))
    return rows


def column(rows: list[dict[str, str]], key: str) -> list[float]:
    return [float(r[key]) for r in rows if r.get(key)]


@pytest.mark.parametrize("config", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_every_config_round_trips_through_print_config(config, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        nmt_main(["fit", "--config", str(config), "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = capsys.readouterr().out
    resolved = tmp_path / "resolved.yaml"
    resolved.write_text(printed)
    with pytest.raises(SystemExit):
        nmt_main(["fit", "--config", str(resolved), "--print_config"])
    assert capsys.readouterr().out == printed
    source = yaml.safe_load(config.read_text())
    parsed = yaml.safe_load(printed)
    assert parsed["model"]["network"]["architecture"] == source["model"]["network"]["architecture"]
    assert parsed["data"]["tokenizer"]["vocab_size"] == source["data"]["tokenizer"]["vocab_size"]


def test_config_errors_name_the_key(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(TINY.read_text().replace("emb_dim: 32", "emb_dimm: 32"))
    with pytest.raises(SystemExit) as exit_info:
        nmt_main(["fit", "--config", str(bad), "--print_config"])
    assert exit_info.value.code != 0
    assert "emb_dimm" in capsys.readouterr().err
    wrong_type = tmp_path / "wrong_type.yaml"
    wrong_type.write_text(TINY.read_text().replace("decoder_dim: 48", "decoder_dim: large"))
    with pytest.raises(SystemExit):
        nmt_main(["fit", "--config", str(wrong_type), "--print_config"])
    assert "decoder_dim" in capsys.readouterr().err


CONFIG_ERRORS = [  # (dotted key, bad value, what the error names)
    ("model.label_smoothng", 0.1, "label_smoothng"),
    ("model.nan_policy", "ignore", "model.nan_policy"),
    ("model.search.beam_size", "wide", "beam_size"),
    ("data.batch_tokens", "many", "data.batch_tokens"),
    ("data.train.srcc", "train.en.gz", "train.srcc"),
    ("data.tokenizer.vocab_size", "big", "data.tokenizer.vocab_size"),
    ("trainer.max_epoch", 3, "max_epoch"),
    ("optimizer.init_args.lrr", 0.1, "lrr"),
    ("modle.network", {"emb_dim": 8}, "modle.network"),
]


@pytest.mark.parametrize(("key", "value", "named"), CONFIG_ERRORS, ids=[k for k, *_ in CONFIG_ERRORS])
def test_unknown_keys_and_wrong_types_in_our_classes_name_the_key(key, value, named, tmp_path, capsys):
    config = yaml.safe_load(TINY.read_text())
    *parents, last = key.split(".")
    section = config
    for name in parents:
        section = section.setdefault(name, {})
    section[last] = value
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(config))
    with pytest.raises(SystemExit) as exit_info:
        nmt_main(["fit", "--config", str(bad), "--print_config"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and named in err.split("error:", 1)[1], err


def test_a_corpus_spec_our_class_refuses_is_a_one_line_error(capsys):
    argv = ["fit", "--config", str(TINY), "--data.data_dir", str(MULTI30K), "--data.train.tsv", "train.tsv"]
    status = nmt_main(argv)
    assert status == 2
    err = capsys.readouterr().err  # (in-process, Lightning's logger may first complain of an earlier test's stream)
    assert err.splitlines()[-1] == (
        "nmt fit: error: configuration: Corpus: give exactly one of src+tgt, tsv, phrase_table, hf_path; "
        "got src+tgt and tsv"
    )


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """Train the tiny config for 3 epochs on 3,000 real pairs (validated on 200), after measuring the
    validation loss of the untrained model."""
    work = tmp_path_factory.mktemp("fit")
    common = [
        "--config",
        str(TINY),
        "--data.data_dir",
        str(MULTI30K),
        "--data.train.limit",
        "3000",
        "--data.val.limit",
        "200",
    ]
    before = run_nmt(["validate", *common], cwd=work)
    assert before.returncode == 0, before.stderr[-3000:]
    initial = column(metrics(work / "runs" / "tiny"), "val/loss")
    assert len(initial) == 1
    shutil.rmtree(work / "runs" / "tiny" / "logs")
    fit = run_nmt(["fit", *common, "--trainer.max_epochs", "3"], cwd=work)
    assert fit.returncode == 0, fit.stderr[-3000:]
    return work, common, initial[0], fit


def test_training_lowers_validation_loss(trained_run):
    work, _, initial_loss, fit = trained_run
    rows = metrics(work / "runs" / "tiny")
    val_loss = column(rows, "val/loss")
    assert len(val_loss) == 3
    assert val_loss[-1] < initial_loss - 1.0, (initial_loss, val_loss)
    bleu = column(rows, "val/bleu")
    assert len(bleu) == 3 and all(0.0 <= b <= 100.0 for b in bleu)
    assert column(rows, "train/tgt_tokens_per_s"), "throughput is logged"
    assert "BLEU" in fit.stderr + fit.stdout and "nrefs:1|case:mixed" in fit.stderr + fit.stdout


def test_checkpoint_alone_is_enough_to_translate(trained_run, tmp_path):
    work, *_ = trained_run
    lonely = tmp_path / "elsewhere" / "model.ckpt"
    lonely.parent.mkdir()
    shutil.copy(work / "runs" / "tiny" / "checkpoints" / "last.ckpt", lonely)
    translator = load_translator(lonely)
    ids = translator.tokenizer.encode_src(["A man is riding a bicycle."])
    assert ids[0][-1] == 3  # EOS
    assert translator.network.architecture == "rnnsearch"
    assert translator.tokenizer.src_vocab_size == 500


def test_resume_continues_from_last_checkpoint(trained_run):
    work, common, *_ = trained_run
    import torch

    last = work / "runs" / "tiny" / "checkpoints" / "last.ckpt"
    step_before = torch.load(last, weights_only=True)["global_step"]
    resumed = run_nmt(["fit", *common, "--trainer.max_epochs", "4", "--ckpt_path", "last"], cwd=work)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after = torch.load(last, weights_only=True)
    assert after["epoch"] == 3
    assert step_before < after["global_step"] <= step_before * 4 // 3 + 1


def test_bad_corpus_is_a_one_line_error(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "train.en").write_text("a man\na woman\na dog\n")
    (corpus / "train.fr").write_text("un homme\nune femme\n")
    for name in ("val", "test_2016_flickr"):
        for lang in ("en", "fr"):
            shutil.copy(MULTI30K / f"{name}.{lang}.gz", corpus / f"{name}.{lang}.gz")
    result = run_nmt(
        [
            "fit",
            "--config",
            str(TINY),
            "--data.data_dir",
            str(corpus),
            "--data.train.src",
            "train.en",
            "--data.train.tgt",
            "train.fr",
            "--data.train.limit",
            "null",
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert "train.fr:3:" in last or "train.fr" in last and "3" in last, result.stderr[-2000:]


def test_the_shell_command_prints_no_warning_about_its_own_arguments(tmp_path):
    result = run_nmt(["fit", "--config", str(TINY), "--print_config"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "architecture: rnnsearch" in result.stdout
    assert "args parameter" not in result.stderr, result.stderr[-2000:]


def test_missing_checkpoint_is_a_one_line_error(tmp_path):
    result = run_nmt(
        ["test", "--config", str(TINY), "--data.data_dir", str(MULTI30K), "--ckpt_path", str(tmp_path / "none.ckpt")],
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "none.ckpt" in result.stderr.strip().splitlines()[-1]
