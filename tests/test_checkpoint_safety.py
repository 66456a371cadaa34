"""Loading a checkpoint someone else made: it never runs code, and every way it can be wrong is one line that
says what is wrong (not a traceback, not a dump of state-dict keys)."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
import torch
from factories import MULTI30K
from test_training import TINY, run_nmt

from nmt.checkpoint import CHECKPOINT_FORMAT, load_model
from nmt.cli import main as nmt_main
from nmt.errors import InputError


class CreatesAFile:
    """Unpickling this calls os.open(marker, O_CREAT): what an attacker's checkpoint would do (with worse)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.open, (str(self.marker), os.O_CREAT | os.O_WRONLY))


@pytest.fixture(scope="module")
def checkpoints(tiny_checkpoints) -> dict[str, Path]:
    return {
        "rnnsearch": tiny_checkpoints(architecture="rnnsearch"),
        "rnnencdec": tiny_checkpoints(architecture="rnnencdec"),
        "cudnn": tiny_checkpoints(architecture="rnnsearch", cell="cudnn"),
    }


def edited(source: Path, target: Path, edit) -> Path:
    """A copy of checkpoint `source` changed by `edit(ckpt)`."""
    ckpt = torch.load(source, weights_only=True)
    edit(ckpt)
    torch.save(ckpt, target)
    return target


COMMANDS = {
    "translate": lambda ckpt, text: ["translate", "--checkpoint", ckpt, "--input", text],
    "evaluate": lambda ckpt, text: ["evaluate", "--checkpoint", ckpt, "--src", text, "--ref", text],
    "score": lambda ckpt, text: ["score", "--checkpoint", ckpt, "--src", text, "--tgt", text],
    "embed": lambda ckpt, text: ["embed", "--checkpoint", ckpt, "--input", text, "--output", text + ".npy"],
    "plot-attention": lambda ckpt, text: [
        "plot-attention",
        "--checkpoint",
        ckpt,
        "--src",
        "a",
        "--output",
        text + ".png",
    ],
}


@pytest.mark.parametrize("command", COMMANDS)
def test_a_checkpoint_whose_pickle_runs_code_is_refused(command, checkpoints, tmp_path, capsys):
    marker = tmp_path / "code-was-run"
    evil = edited(checkpoints["rnnsearch"], tmp_path / "evil.ckpt", lambda c: c.update(payload=CreatesAFile(marker)))
    text = tmp_path / "in.txt"
    text.write_text("a man\n")
    assert nmt_main(COMMANDS[command](str(evil), str(text))) == 2
    err = capsys.readouterr().err
    assert re.fullmatch(
        rf"nmt {command}: error: {re.escape(str(evil))}: refused to load: its pickle would call posix\.open, i\.e\. "
        r"run code; nmt reads checkpoints as plain data only \(torch\.load weights_only=True\)\n",
        err,
    ), err
    assert not marker.exists()
    assert not list(tmp_path.glob("in.txt.*"))  # no output either
    torch.load(evil, weights_only=False)  # what nmt refused to do: the pickle really runs code
    assert marker.exists()


BROKEN = {  # name -> (how the checkpoint is made from a good rnnsearch one, what the error says)
    "newer format": (
        lambda c: c["nmt"].update(format=CHECKPOINT_FORMAT + 1, version="9.0.0"),
        rf"checkpoint format {CHECKPOINT_FORMAT + 1} \(written by nmt 9\.0\.0\) but this is nmt [\d.]+, which reads "
        rf"format {CHECKPOINT_FORMAT}; upgrade nmt to read it",
    ),
    "no nmt metadata (a plain Lightning checkpoint)": (lambda c: c.pop("nmt"), r"not an nmt checkpoint"),
    "unknown network option": (
        lambda c: c["nmt"]["network"].update(layers=6),
        r"network option\(s\) layers unknown to nmt [\d.]+ \(checkpoint written by nmt [\d.]+\)",
    ),
    "unknown architecture": (
        lambda c: c["nmt"]["network"].update(architecture="transformer"),
        r"network\.architecture is 'transformer'; nmt [\d.]+ knows 'rnnencdec', 'rnnsearch'",
    ),
    "metadata of the wrong type": (lambda c: c["nmt"].update(network="rnnsearch"), r"nmt\.network is a str"),
    "missing vocabulary size": (lambda c: c["nmt"].pop("tgt_vocab_size"), r"nmt\.tgt_vocab_size is missing"),
    "corrupt SentencePiece model": (
        lambda c: c["nmt"]["tokenizer"].update(src=b"garbage", tgt=b"garbage"),
        r"its SentencePiece model is unreadable",
    ),
    "vocabulary of another size": (
        lambda c: c["nmt"].update(src_vocab_size=c["nmt"]["src_vocab_size"] + 1),
        r"built for vocabularies of 401/400 pieces but its SentencePiece model has 400/400",
    ),
    "weight of another shape": (
        lambda c: c["state_dict"].update({"model.W_s.weight": torch.zeros(3, 3)}),
        r"weight W_s\.weight has shape \(3, 3\), the network expects \(24, 16\)",
    ),
    "NaN weight": (
        lambda c: c["state_dict"]["model.W_s.weight"].view(-1).__setitem__(0, float("nan")),
        r"weight W_s\.weight holds NaN or infinite values",
    ),
}


@pytest.mark.parametrize("name", BROKEN)
def test_a_broken_checkpoint_is_a_one_line_error(name, checkpoints, tmp_path, capsys):
    edit, message = BROKEN[name]
    broken = edited(checkpoints["rnnsearch"], tmp_path / "broken.ckpt", edit)
    text = tmp_path / "in.txt"
    text.write_text("a man\n")
    assert nmt_main(["translate", "--checkpoint", str(broken), "--input", str(text)]) == 2
    err = capsys.readouterr().err
    assert re.fullmatch(rf"nmt translate: error: {re.escape(str(broken))}: [^\n]*{message}[^\n]*\n", err), err


@pytest.mark.parametrize(
    ("metadata_of", "weights_of", "network"),
    [("rnnsearch", "rnnencdec", "rnnsearch/paper"), ("rnnencdec", "rnnsearch", "rnnencdec/paper"),
     ("rnnsearch", "cudnn", "rnnsearch/paper")],
    ids=["attention metadata, encoder-decoder weights", "the reverse", "paper-GRU metadata, cuDNN-GRU weights"],
)  # fmt: skip
def test_weights_of_another_model_variant_name_the_mismatch(metadata_of, weights_of, network, checkpoints, tmp_path):
    meta = torch.load(checkpoints[metadata_of], weights_only=True)["nmt"]
    mixed = edited(checkpoints[weights_of], tmp_path / "mixed.ckpt", lambda c: c.update(nmt=meta))
    with pytest.raises(InputError) as error:
        load_model(mixed)
    message = str(error.value)
    assert f"its weights do not fit the {network} network its metadata describes" in message
    assert re.search(r"\d+ missing \(e\.g\. \['[\w.]+'\]\), \d+ unexpected", message)
    assert "\n" not in message and len(message) < 400  # one example of each, not the whole key list


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"", "the file is empty or cut short"), (None, "not a readable checkpoint"),
     (b"[1, 2]", "not a readable checkpoint")],
    ids=["empty file", "truncated zip", "not a pickle"],
)  # fmt: skip
def test_files_that_are_not_checkpoints(content, message, checkpoints, tmp_path):
    path = tmp_path / "x.ckpt"
    path.write_bytes(content if content is not None else checkpoints["rnnsearch"].read_bytes()[:3000])
    with pytest.raises(InputError) as error:
        load_model(path)
    assert message in str(error.value) and "\n" not in str(error.value)
    torch.save([1, 2], path)
    with pytest.raises(InputError, match="not an nmt checkpoint"):
        load_model(path)


def test_random_bytes_are_never_a_traceback(tmp_path):
    """Corrupt bytes break the unpickler in many ways (unknown opcode, bad length, stack underflow…);
    every one of them is the same one-line error. Seeded: a failing trial number reproduces its bytes."""
    generator = torch.Generator().manual_seed(0)
    path = tmp_path / "x.ckpt"
    for trial in range(300):
        # Half start with a pickle protocol header, so the unpickler gets past the first opcode.
        body = torch.randint(0, 256, (int(torch.randint(1, 64, (1,), generator=generator)),), generator=generator)
        header = b"\x80\x02" if trial % 2 else b""
        path.write_bytes(header + bytes(body.tolist()))
        with pytest.raises(InputError) as error:
            load_model(path)
        assert "not a readable checkpoint" in str(error.value) and "\n" not in str(error.value), trial


def test_a_directory_or_a_device_is_named_as_such(tmp_path, capsys):
    text = tmp_path / "in.txt"
    text.write_text("a man\n")
    fifo = tmp_path / "fifo.ckpt"
    os.mkfifo(fifo)  # reading it would block: refused before it is opened
    for path, message in [
        (tmp_path, "is a directory, not a checkpoint file"),
        (Path("/dev/zero"), "not a regular file"),
        (fifo, "not a regular file"),
        (tmp_path / "none.ckpt", "checkpoint not found"),
    ]:
        assert nmt_main(["translate", "--checkpoint", str(path), "--input", str(text)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"nmt translate: error: {path}: {message}") and err.count("\n") == 1, err


# -- nmt fit/validate/test --ckpt_path: the same reader, before Lightning reads the file ----------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A real training checkpoint: the tiny config trained for 2 steps (its last.ckpt, under runs/tiny/ of the
    returned directory, with its data cache beside it)."""
    work = tmp_path_factory.mktemp("fit")
    result = run_nmt(["fit", *training_options(work), "--trainer.max_steps", "2"], cwd=work)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (work / LAST).is_file()
    return work


LAST = Path("runs/tiny/checkpoints/last.ckpt")


def training_options(work: Path) -> list[str]:
    return ["--config", str(TINY), "--data.data_dir", str(MULTI30K), "--data.cache_dir", str(work / "cache"),
            "--data.val.limit", "20", "--data.test.limit", "20"]  # fmt: skip


TRAINING_CASES = {  # name -> (the checkpoint, more options, what the error says)
    "other sizes": ("trained", ["--model.network.emb_dim", "16"], r"model\.network\.emb_dim is 32 in it, 16 here"),
    "other vocabulary": (
        "trained",
        ["--data.tokenizer.vocab_size", "400"],
        r"vocabularies of 500/500 pieces in it, 400/400 here \(data\.tokenizer\.vocab_size\)",
    ),
    "other architecture": (
        "trained",
        ["--model.network.architecture", "rnnencdec"],
        r"model\.network\.architecture is 'rnnsearch' in it, 'rnnencdec' here",
    ),
    "other GRU": ("trained", ["--model.network.cell", "cudnn"], r"model\.network\.cell is 'paper' in it, 'cudnn' here"),
    "zero-byte file": (lambda path: path.write_bytes(b""), [], r"not a readable checkpoint \(the file is empty"),
    "directory": (lambda path: path.mkdir(), [], r"is a directory, not a checkpoint file"),
    "/dev/zero": ("/dev/zero", [], r"not a regular file \(a character device\)"),
    "not an nmt checkpoint": (lambda path: torch.save({"state_dict": {}}, path), [], r"not an nmt checkpoint"),
    "weight of another shape": (
        {"model.W_s.weight": torch.zeros(3, 3)},
        [],
        r"weight W_s\.weight has shape \(3, 3\), the configured network has \(48, 64\)",
    ),
}


def training_checkpoint(case, trained: Path, tmp_path: Path) -> Path:
    """The trained checkpoint ("trained"), a fixed path (a str), a file made by a function, or the trained
    checkpoint with these state_dict entries (a dict)."""
    make = TRAINING_CASES[case][0]
    if make == "trained":
        return trained / LAST
    if isinstance(make, str):
        return Path(make)
    path = tmp_path / "x.ckpt"
    if isinstance(make, dict):
        return edited(trained / LAST, path, lambda c: c["state_dict"].update(make))
    make(path)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("command", ["fit", "validate", "test"])
@pytest.mark.parametrize("case", TRAINING_CASES)
def test_a_training_checkpoint_that_does_not_fit_is_a_one_line_error(case, command, trained, tmp_path, capsys,
                                                                       monkeypatch):  # fmt: skip
    ckpt = training_checkpoint(case, trained, tmp_path)
    monkeypatch.chdir(tmp_path)
    status = nmt_main([command, *training_options(trained), *TRAINING_CASES[case][1], "--ckpt_path", str(ckpt)])
    err = capsys.readouterr().err.splitlines()[-1]  # (in-process, Lightning may first warn about its logger)
    assert status == 2, err
    assert re.fullmatch(rf"nmt {command}: error: {re.escape(str(ckpt))}: [^\n]*{TRAINING_CASES[case][2]}.*", err)
    assert not (tmp_path / "runs").exists()  # refused before anything ran


@pytest.mark.slow
def test_a_checkpoint_that_fits_is_loaded(trained, tmp_path, monkeypatch):
    """The checks refuse nothing that loads: options that only shape training (dropout, the initialisation) may
    differ, and an explicit path, `last` and a copy elsewhere all evaluate."""
    monkeypatch.chdir(tmp_path)
    shutil.copy(trained / LAST, tmp_path / "copy.ckpt")
    changed = ["--model.network.dropout", "0.5", "--model.network.init", "pytorch"]
    assert nmt_main(["validate", *training_options(trained), *changed, "--ckpt_path", "copy.ckpt"]) == 0
    monkeypatch.chdir(trained)
    assert nmt_main(["validate", *training_options(trained), "--ckpt_path", "last"]) == 0


@pytest.mark.slow
def test_resuming_last_with_a_changed_config_names_the_change(trained, capsys, monkeypatch):
    monkeypatch.chdir(trained)  # where `last` is runs/tiny/checkpoints/last.ckpt
    status = nmt_main(["fit", *training_options(trained), "--model.network.decoder_dim", "24", "--ckpt_path", "last"])
    err = capsys.readouterr().err.splitlines()[-1]
    assert status == 2
    assert err == (
        f"nmt fit: error: {os.path.realpath(trained / LAST)}: its weights do not fit the configured network: "
        "model.network.decoder_dim is 48 in it, 24 here"
    )


@pytest.mark.slow
def test_best_names_no_file_from_the_command_line(trained, tmp_path, capsys, monkeypatch):
    """`best` is the best checkpoint of a fit earlier in the same process: a new process has none."""
    monkeypatch.chdir(tmp_path)
    assert nmt_main(["validate", *training_options(trained), "--ckpt_path", "best"]) == 2
    err = capsys.readouterr().err.splitlines()[-1]
    assert err.startswith("nmt validate: error: --ckpt_path: best is the best checkpoint of a fit earlier"), err


def test_resuming_from_weights_alone_is_a_one_line_error(trained, tmp_path, capsys, monkeypatch):
    """A checkpoint without the training state (save_weights_only) can be evaluated, not resumed."""
    weights = edited(trained / LAST, tmp_path / "weights.ckpt", lambda c: [c.pop("optimizer_states"), c.pop("loops")])
    monkeypatch.chdir(tmp_path)
    assert nmt_main(["fit", *training_options(trained), "--ckpt_path", str(weights)]) == 2
    err = capsys.readouterr().err.splitlines()[-1]
    assert err.startswith(f"nmt fit: error: {weights}: ") and "no optimizer state" in err, err


@pytest.mark.parametrize("command", ["fit", "validate"])
def test_a_training_checkpoint_whose_pickle_runs_code_is_refused(command, trained, tmp_path, capsys, monkeypatch):
    marker = tmp_path / "code-was-run"
    evil = edited(trained / LAST, tmp_path / "evil.ckpt", lambda c: c.update(payload=CreatesAFile(marker)))
    monkeypatch.chdir(tmp_path)
    assert nmt_main([command, *training_options(trained), "--ckpt_path", str(evil)]) == 2
    err = capsys.readouterr().err.splitlines()[-1]
    assert err == (
        f"nmt {command}: error: {evil}: refused to load: its pickle would call posix.open, i.e. run code; nmt reads "
        "checkpoints as plain data only (torch.load weights_only=True)"
    )
    assert not marker.exists()
    torch.load(evil, weights_only=False)  # the pickle really runs code
    assert marker.exists()
