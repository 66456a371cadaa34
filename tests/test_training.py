"""The real `nmt fit` CLI end to end on real Multi30k lines: training lowers the validation loss, checkpoints
carry everything inference needs, resuming continues, configs round-trip through --print_config."""

from __future__ import annotations

import csv
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import sacrebleu
import yaml
from factories import MULTI30K, multi30k_lines

from nmt.cli import main as nmt_main
from nmt.decoding import SearchConfig
from nmt.inference import Translator

pytestmark = pytest.mark.slow  # trains or starts `nmt` subprocesses: not in the fast tier

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
    assert nmt_main(["fit", "--config", str(bad), "--print_config"]) == 2
    err = capsys.readouterr().err
    assert "emb_dimm" in err and len(err.splitlines()) == 1, err
    wrong_type = tmp_path / "wrong_type.yaml"
    wrong_type.write_text(TINY.read_text().replace("decoder_dim: 48", "decoder_dim: large"))
    assert nmt_main(["fit", "--config", str(wrong_type), "--print_config"]) == 2
    err = capsys.readouterr().err
    assert "decoder_dim" in err and len(err.splitlines()) == 1, err


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
    assert nmt_main(["fit", "--config", str(bad), "--print_config"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.splitlines()) == 1 and named in err.split("error:", 1)[1], err


def test_a_corpus_spec_our_class_refuses_is_a_one_line_error(capsys):
    argv = ["fit", "--config", str(TINY), "--data.data_dir", str(MULTI30K), "--data.train.tsv", "train.tsv"]
    status = nmt_main(argv)
    assert status == 2
    err = capsys.readouterr().err  # (in-process, Lightning's logger may first complain of an earlier test's stream)
    assert err.splitlines()[-1] == (
        "nmt fit: error: configuration: Corpus: give exactly one of src+tgt, tsv, phrase_table, hf_path; "
        "got src+tgt and tsv"
    )


VOCABULARY_ERRORS = {  # name -> (config, options, what the error says after `data.tokenizer.vocab_size: `)
    # The WMT'14 config (30,000 pieces per side) on Multi30k: its source side cannot give that many.
    "a WMT config on Multi30k": (
        ROOT / "configs" / "bahdanau2015_wmt14_en_fr.yaml",
        ["--data.train.src", "train.en.gz", "--data.train.tgt", "train.fr.gz", "--data.train.limit", "3000",
         "--data.val.src", "val.en.gz", "--data.val.tgt", "val.fr.gz", "--data.test", "null", "--data.num_proc", "1"],
        r"30000 is more than the source side of the training corpus allows: at most (\d+) pieces; set "
        r"data\.tokenizer\.vocab_size to \1 or less",
    ),
    "fewer pieces than characters": (
        TINY,
        ["--data.tokenizer.vocab_size", "30"],
        r"30 is less than the training corpus needs: at least (\d+) pieces, one for each character it keeps "
        r"\(data\.tokenizer\.character_coverage=1\.0\); raise it or lower data\.tokenizer\.character_coverage",
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", VOCABULARY_ERRORS)
def test_a_vocabulary_size_the_corpus_cannot_give_is_a_one_line_error(name, tmp_path, capsys, monkeypatch):
    config, options, message = VOCABULARY_ERRORS[name]
    monkeypatch.chdir(tmp_path)
    data = ["--data.data_dir", str(MULTI30K), "--data.cache_dir", str(tmp_path)]
    assert nmt_main(["fit", "--config", str(config), *data, *options]) == 2
    err = capsys.readouterr().err.splitlines()[-1]
    assert re.fullmatch(rf"nmt fit: error: data\.tokenizer\.vocab_size: {message}", err), err


def write_module(directory: Path, name: str, marker: Path) -> None:
    """A module whose import writes `marker` (what a hostile config could make any importable module do)."""
    code = f"open({str(marker)!r}, 'w').close()\nimport lightning.pytorch as pl\nclass Thing(pl.Callback): pass\n"
    (directory / f"{name}.py").write_text(code)


CLASS_PATHS = {  # name -> (where the class_path is given, the key the error names)
    "a callback in the config": (
        lambda c, cp: c["trainer"]["callbacks"].append({"class_path": cp}), [], "trainer.callbacks"
    ),
    "the optimizer in the config": (lambda c, cp: c.update(optimizer={"class_path": cp}), [], "optimizer"),
    "the logger on the command line": (None, ["--trainer.logger", "{cp}"], "trainer.logger"),
    "a callback on the command line": (None, ["--trainer.callbacks+={cp}"], "trainer.callbacks"),
    "the scheduler on the command line": (None, ["--lr_scheduler.class_path", "{cp}"], "lr_scheduler"),
}  # fmt: skip


@pytest.mark.parametrize("name", CLASS_PATHS)
def test_a_class_path_outside_the_allowed_modules_is_refused_unimported(name, tmp_path, capsys, monkeypatch):
    edit, options, key = CLASS_PATHS[name]
    module = "hostile_" + re.sub(r"\W", "_", name)
    marker = tmp_path / "imported"
    write_module(tmp_path, module, marker)
    monkeypatch.syspath_prepend(tmp_path)
    monkeypatch.delenv("NMT_ALLOW_ANY_CLASS_PATH", raising=False)
    config = yaml.safe_load(TINY.read_text())
    if edit is not None:
        edit(config, f"{module}.Thing")
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    options = [option.format(cp=f"{module}.Thing") for option in options]
    assert nmt_main(["fit", "--config", str(path), *options, "--print_config"]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"nmt fit: error: configuration: {key}: class_path '{module}.Thing' is outside the modules a config may name "
        "(nmt, lightning, torch); nothing of it was imported (NMT_ALLOW_ANY_CLASS_PATH=1 allows any module)\n"
    )
    assert not marker.exists() and module not in sys.modules


def test_the_class_path_allow_list_can_be_lifted(tmp_path):
    """NMT_ALLOW_ANY_CLASS_PATH=1: a config may name a class of any importable module (its import runs)."""
    marker = tmp_path / "imported"
    write_module(tmp_path, "own_callbacks", marker)
    argv = ["fit", "--config", str(TINY), "--trainer.callbacks+=own_callbacks.Thing", "--print_config"]
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=f"{tmp_path}{os.pathsep}{ROOT}")

    def run(**extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "nmt", *argv], cwd=tmp_path, env={**env, **extra}, capture_output=True, text=True
        )

    refused = run()
    assert refused.returncode == 2 and "own_callbacks.Thing" in refused.stderr and not marker.exists()
    allowed = run(NMT_ALLOW_ANY_CLASS_PATH="1")
    assert allowed.returncode == 0, allowed.stderr[-2000:]
    assert "class_path: own_callbacks.Thing" in allowed.stdout and marker.exists()


YAML_ERRORS = {  # name -> (the file's bytes, its line the error names, what it says)
    "unclosed list": (
        b"trainer:\n  max_epochs: 2\n  callbacks: [a, b\nmodel:\n  label_smoothing: 0.1\n",
        4,
        r"not valid YAML: expected ',' or '\]', but got ':' \(column 6; while parsing a flow sequence from line 3\)",
    ),
    "tab indentation": (b"trainer:\n\tmax_epochs: 2\n", 2, r"not valid YAML: found character '\\t' that cannot start"),
    "invalid UTF-8": (b"# caf\xe9\nseed_everything: 1\n", 1, r"not valid UTF-8 \(byte 0xe9\)"),
    "empty": (b"", None, r"holds nothing, not a mapping of options"),
    "a list": (b"- trainer\n", None, r"holds a list, not a mapping of options"),
}  # fmt: skip


@pytest.mark.parametrize("name", YAML_ERRORS)
def test_a_config_that_is_not_valid_yaml_names_the_file_and_line(name, tmp_path, capsys):
    content, line, message = YAML_ERRORS[name]
    config = tmp_path / "bad.yaml"
    config.write_bytes(content)
    assert nmt_main(["fit", "--config", str(config), "--print_config"]) == 2
    where = f"{config}:{line}" if line else str(config)
    err = capsys.readouterr().err
    assert re.fullmatch(rf"nmt fit: error: {re.escape(where)}: {message}[^\n]*\n", err), err


@pytest.mark.parametrize(
    ("path", "message"),
    [("configs", "is a directory, not a config file"), ("/dev/zero", "not a regular file"),
     ("no/such.yaml", "config file not found")],
)  # fmt: skip
def test_a_config_path_that_is_no_file_is_a_one_line_error(path, message, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert nmt_main(["fit", "--config", path, "--print_config"]) == 2
    assert capsys.readouterr().err.startswith(f"nmt fit: error: {path}: {message}")


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
        "--data.val.src",  # the validation split, whose lines the tests below read
        "val.en.gz",
        "--data.val.tgt",
        "val.fr.gz",
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
    assert len(bleu) == 3
    # The last validation's BLEU is sacrebleu's on the greedy translations the final weights (last.ckpt) give.
    run = work / "runs" / "tiny"
    (run / "val.en").write_text("".join(line + "\n" for line in multi30k_lines("val", "en", 200)))
    options = ["--checkpoint", str(run / "checkpoints" / "last.ckpt"), "--beam-size", "1"]
    assert nmt_main(["translate", *options, "--input", str(run / "val.en"), "--output", str(run / "val.fr")]) == 0
    hypotheses = (run / "val.fr").read_text().splitlines()
    expected = sacrebleu.corpus_bleu(hypotheses, [multi30k_lines("val", "fr", 200)]).score
    assert bleu[-1] == pytest.approx(expected, abs=0.01) and expected > 0, (bleu, expected)
    assert column(rows, "train/tgt_tokens_per_s"), "throughput is logged"
    assert "BLEU" in fit.stderr + fit.stdout and "nrefs:1|case:mixed" in fit.stderr + fit.stdout
    assert "💡" not in fit.stderr + fit.stdout and "litlogger" not in fit.stderr + fit.stdout  # no advertising


def test_checkpoint_alone_is_enough_to_translate(trained_run, tmp_path):
    """The checkpoint `nmt fit` wrote, copied alone into an empty directory, translates: the command from
    there, and the same lines through `nmt.Translator`, give the same translations, and they are French."""
    work, *_ = trained_run
    lonely = tmp_path / "elsewhere" / "model.ckpt"
    lonely.parent.mkdir()
    shutil.copy(work / "runs" / "tiny" / "checkpoints" / "last.ckpt", lonely)
    sources = multi30k_lines("val", "en", 20)
    (lonely.parent / "src.en").write_text("".join(line + "\n" for line in sources))
    result = run_nmt(
        ["translate", "--checkpoint", "model.ckpt", "--input", "src.en", "--output", "out.fr", "--beam-size", "1"],
        cwd=lonely.parent,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    written = (lonely.parent / "out.fr").read_text().splitlines()
    assert len(written) == len(sources)
    translator = Translator.load(lonely, device="cpu")
    vocab_size = yaml.safe_load(TINY.read_text())["data"]["tokenizer"]["vocab_size"]
    assert translator.network.architecture == "rnnsearch" and translator.tokenizer.src_vocab_size == vocab_size
    found = [t.text for t in translator.translate(sources, SearchConfig(beam_size=1))]
    assert written == found
    assert sum(bool(line.strip()) for line in written) >= 18
    # Three epochs on 3,000 pairs: far from good ("Un hommeeee…"), but sentences start as French ones do.
    openings = {line.split()[0] for line in multi30k_lines("val", "fr", 200)}
    assert sum(line.split()[0] in openings for line in written if line.strip()) >= 15, written[:5]


def test_resume_continues_from_last_checkpoint(trained_run):
    work, common, *_ = trained_run
    import torch

    last = work / "runs" / "tiny" / "checkpoints" / "last.ckpt"
    step_before = torch.load(last, weights_only=True)["global_step"]
    resumed = run_nmt(["fit", *common, "--trainer.max_epochs", "4", "--ckpt_path", "last"], cwd=work)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after = torch.load(last, weights_only=True)
    assert after["epoch"] == 4  # the epoch it resumes with: four are done
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
    assert last.startswith(f"nmt fit: error: {corpus / 'train.fr'}:3: line missing: "), result.stderr[-2000:]


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


def test_partial_validation_scores_the_sentences_it_decoded(trained_run, tmp_path):
    """`limit_val_batches` and `fast_dev_run` validate a subset: BLEU over what was decoded, the subset named in
    the log (before, `RuntimeError: val: decoded 90 of 100 sentences`)."""
    work, common, *_ = trained_run
    cache = ["--data.cache_dir", str(work / ".cache" / "nmt")]
    last = str(work / "runs" / "tiny" / "checkpoints" / "last.ckpt")
    validate = run_nmt(
        ["validate", *common, *cache, "--ckpt_path", last, "--trainer.limit_val_batches", "0.5"], tmp_path
    )
    assert validate.returncode == 0, validate.stderr[-3000:]
    assert re.search(r"BLEU [\d.]+ .* over \d+ of 200 sentences", validate.stderr), validate.stderr[-3000:]
    quick = run_nmt(["fit", *common, *cache, "--trainer.fast_dev_run", "true"], tmp_path)
    assert quick.returncode == 0, quick.stderr[-3000:]
    assert "Traceback" not in quick.stderr
