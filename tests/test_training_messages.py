"""What `nmt fit|validate|test` say when a config or the command line is wrong, and when a run resumes: every
mistake one line (two at most) on stderr, exit status 2, naming the key as written, where it was given (the config
file and line, or the command line) and the nearest valid key; `--ckpt_path last` says whether it resumes (the
checkpoint, epoch and step) or starts a new run (the directory searched), without Lightning's untrue warnings."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from factories import MULTI30K
from test_training import TINY, run_nmt

from nmt.cli import main


def mistake(argv: list[str], capsys) -> str:
    """stderr of `nmt ARGV`, checked to be a short error: status 2, nothing on stdout, at most two lines."""
    status = main(argv)
    out, err = capsys.readouterr()
    assert status == 2 and out == "", err
    assert err.endswith("\n") and 1 <= len(err.splitlines()) <= 2, err
    assert "usage" not in err
    return err


def config_with(tmp_path: Path, old: str, new: str) -> tuple[Path, int]:
    """configs/tiny.yaml with the first line that begins (after its indentation) with `old` replaced by `new`, and
    that line's number."""
    lines = TINY.read_text(encoding="utf-8").splitlines()
    number = next(i for i, line in enumerate(lines, 1) if line.strip().startswith(old))
    line = lines[number - 1]
    lines[number - 1] = line[: len(line) - len(line.lstrip())] + new
    path = tmp_path / "config.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path, number


COMMAND_LINE_MISTAKES = {
    "network key": (
        ["--model.network.emb_dm", "32"],
        "command line: --model.network.emb_dm: unknown option; did you mean --model.network.emb_dim?",
    ),
    "trainer key": (
        ["--trainer.max_stepz", "7"],
        "command line: --trainer.max_stepz: unknown option; did you mean --trainer.max_steps?",
    ),
    "abbreviation": (
        ["--trainer.max_step", "60"],
        "command line: --trainer.max_step: unknown option; did you mean --trainer.max_steps?",
    ),
    "section": (
        ["--modle.network.emb_dim", "32"],
        "command line: --modle.network.emb_dim: unknown option; did you mean --model.network.emb_dim?",
    ),
    "optimizer argument": (
        ["--optimizer.init_args.lrr", "0.1"],
        "command line: --optimizer.init_args.lrr: unknown option; did you mean --optimizer.init_args.lr?",
    ),
    "value": (["--trainer.max_epochs", "two"], "command line: --trainer.max_epochs: expected int; given: two"),
    "moved class": (
        ["--trainer.callbacks+=nmt.callbacks.LRMonitor"],
        "command line: class_path nmt.callbacks.LRMonitor: it is now nmt.training.callbacks.LRMonitor",
    ),
    "stray argument": (["stray"], "command line: unexpected argument 'stray'"),
}


@pytest.mark.parametrize("given, expected", COMMAND_LINE_MISTAKES.values(), ids=COMMAND_LINE_MISTAKES.keys())
def test_a_command_line_mistake_is_one_line_naming_the_key_and_the_fix(given, expected, capsys):
    err = mistake(["fit", "--config", str(TINY), *given], capsys)
    assert err.startswith(f"nmt fit: error: {expected}"), err


@pytest.mark.parametrize("command", ["validate", "test"])
def test_validate_and_test_say_the_same(command, tmp_path, capsys):
    err = mistake([command, "--config", str(TINY), "--trainer.max_step", "60"], capsys)
    assert err == f"nmt {command}: error: {COMMAND_LINE_MISTAKES['abbreviation'][1]}\n"
    config, line = config_with(tmp_path, "emb_dim: 32", "emb_dm: 32")
    err = mistake([command, "--config", str(config)], capsys)
    assert err == f"nmt {command}: error: {config}:{line}: {CONFIG_MISTAKES['network key'][2]}\n"


CONFIG_MISTAKES = {
    "network key": (
        "emb_dim: 32",
        "emb_dm: 32",
        "model.network.emb_dm: unknown option; did you mean model.network.emb_dim?",
    ),
    "trainer key": (
        "max_epochs:",
        "max_epochz: 2",
        "trainer.max_epochz: unknown option; did you mean trainer.max_epochs?",
    ),
    "data key": (
        "batch_tokens: 1500",
        "batch_tokenz: 1500",
        "data.batch_tokenz: unknown option; did you mean data.batch_tokens?",
    ),
    "section": ("model:", "modle:", "modle: unknown option; did you mean model?"),
    "search key": (
        "beam_size: 1",
        "beam_sise: 1",
        "model.search.beam_sise: unknown option; did you mean model.search.beam_size?",
    ),
    "optimizer argument": (
        "lr:",
        "lrr: 0.003",
        "optimizer.init_args.lrr: unknown option; did you mean optimizer.init_args.lr?",
    ),
    "moved callback": (
        "- class_path: nmt.training.resume.ResumeCheckpoint",
        "- class_path: nmt.resume.ResumeCheckpoint",
        "class_path nmt.resume.ResumeCheckpoint: it is now nmt.training.resume.ResumeCheckpoint",
    ),
    "value": ("max_epochs:", "max_epochs: two", "trainer.max_epochs: expected int; given: two"),
}


@pytest.mark.parametrize("old, new, expected", CONFIG_MISTAKES.values(), ids=CONFIG_MISTAKES.keys())
def test_a_config_mistake_is_one_line_naming_the_file_line_key_and_fix(old, new, expected, tmp_path, capsys):
    config, line = config_with(tmp_path, old, new)
    err = mistake(["fit", "--config", str(config)], capsys)
    assert err == f"nmt fit: error: {config}:{line}: {expected}\n"


def test_a_missing_config_file_is_one_line_with_the_file_meant(capsys, monkeypatch):
    monkeypatch.chdir(TINY.parent.parent)
    err = mistake(["fit", "--config", "configs/tiny"], capsys)
    assert err == "nmt fit: error: configs/tiny: config file not found; did you mean configs/tiny.yaml?\n"
    err = mistake(["fit", "--config", "configs/none.yaml"], capsys)
    assert err == "nmt fit: error: configs/none.yaml: config file not found\n"


@pytest.mark.parametrize("argv", [["fit"], ["validate", "--ckpt_path", "x.ckpt"], ["test"]])
def test_no_config_says_so_and_how_to_give_one(argv, capsys):
    err = mistake(argv, capsys)
    assert err.startswith(f"nmt {argv[0]}: error: command line: no config given; ")
    assert f"nmt {argv[0]} --config configs/tiny.yaml" in err


def test_help_shows_the_network_options(capsys):
    with pytest.raises(SystemExit) as exit:
        main(["fit", "--help"])
    assert exit.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    network = text.partition(
        "network options (in the config under model: network:, or on the command line as --model.network.NAME VALUE): "
    )[2]
    assert network.startswith("--model.network CONFIG"), text
    assert "--model.network.emb_dim EMB_DIM Word embedding size m (both sides). (type: int, default: 620)" in network


# -- resuming ------------------------------------------------------------------------------------------------------

RUN = [
    "fit",
    "--config",
    str(TINY),
    "--data.data_dir",
    str(MULTI30K),
    "--data.train.limit",
    "100",
    "--data.val.limit",
    "10",
    "--trainer.max_epochs",
    "1",
    "--trainer.enable_progress_bar",
    "false",
    "--trainer.enable_model_summary",
    "false",
    "--ckpt_path",
    "last",
]
ALARMS = (
    "exists and is not empty",
    "could not find the monitored key",
    "callbacks used to create the checkpoint",
    "weights_only",
    "deprecated",
    "Warning",
)


@pytest.mark.slow
def test_resume_says_whether_it_resumes_and_from_where(tmp_path):
    run = tmp_path / "run"
    started = run_nmt([*RUN, "--trainer.default_root_dir", str(run), "--trainer.max_steps", "2"], tmp_path)
    assert started.returncode == 0, started.stderr
    assert f"--ckpt_path last: no checkpoint to resume in {run / 'checkpoints'}; a new run starts\n" in started.stderr
    moved = tmp_path / "moved"  # a run directory moved (or copied) before it resumes
    shutil.copytree(run, moved)
    resumed = run_nmt([*RUN, "--trainer.default_root_dir", str(moved)], tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming from {moved / 'checkpoints' / 'last.ckpt'}: epoch 0, step 2\n" in resumed.stderr
    for output in (started.stderr, resumed.stderr):
        for alarm in ALARMS:
            assert alarm not in output, output
