"""``nmt average``: the element-wise mean of checkpoints' weights, refused across networks or vocabularies, and
the checkpoints of a run picked by validation BLEU or by updates."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from nmt.cli import main
from nmt.decoding import SearchConfig
from nmt.inference import Translator
from tests.factories import multi30k_lines, tiny_checkpoint, tiny_tokenizer

MODEL_CHECKPOINT = "ModelCheckpoint{'monitor': 'val/bleu', 'mode': 'max', 'every_n_train_steps': 0, 'every_n_epochs': 1, 'train_time_interval': None}"  # noqa: E501  Lightning's state key


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["state_dict"]


def test_the_average_is_the_mean_of_the_weights_and_translates(tiny_checkpoints, tmp_path, capsys):
    inputs = [tiny_checkpoints(architecture="rnnsearch", seed=seed) for seed in (0, 1, 2)]
    out = tmp_path / "mean.ckpt"
    assert main(["average", *map(str, inputs), "--output", str(out)]) == 0
    assert capsys.readouterr().err.startswith(f"nmt average: {out}: the mean of 3 checkpoints")
    averaged, each = weights(out), [weights(path) for path in inputs]
    assert set(averaged) == set(each[0])
    for name, tensor in averaged.items():
        expected = (sum(w[name].double() for w in each) / 3).float()
        assert tensor.dtype == torch.float32
        torch.testing.assert_close(tensor, expected, rtol=0, atol=0, msg=name)
    assert not torch.equal(averaged["model.output.W_o.weight"], each[0]["model.output.W_o.weight"])
    meta = torch.load(out, weights_only=True)["nmt"]
    assert meta["exported"] == {"dtype": "float32", "averaged": [{"from": path.name} for path in inputs]}
    translator = Translator.load(out, device="cpu")
    lines = multi30k_lines("test_2016_flickr", "en", 3)
    assert len([t.text for t in translator.translate(lines, SearchConfig(beam_size=2))]) == 3


def test_an_averaged_checkpoint_is_read_by_the_other_commands(tiny_checkpoints, tmp_path):
    inputs = [str(tiny_checkpoints(architecture="rnnsearch", seed=seed)) for seed in (0, 1)]
    out, text = tmp_path / "mean.ckpt", tmp_path / "in.en"
    text.write_text("a man rides a bike .\n")
    assert main(["average", *inputs, "--output", str(out)]) == 0
    assert main(["translate", "--checkpoint", str(out), "--input", str(text), "--output", str(tmp_path / "o.fr"),
                 "--beam-size", "2", "--no-progress"]) == 0  # fmt: skip
    assert main(["score", "--checkpoint", str(out), "--src", str(text), "--tgt", str(text),
                 "--output", str(tmp_path / "scores.txt")]) == 0  # fmt: skip


@pytest.mark.parametrize(
    ("other", "difference"),
    [
        ({"architecture": "rnnencdec"}, "network.architecture is 'rnnencdec' in it, 'rnnsearch' in"),
        ({"architecture": "rnnsearch", "emb_dim": 8}, "network.emb_dim is 8 in it, 16 in"),
        ({"architecture": "rnnsearch", "tokenizer_lines": 2000}, "its source SentencePiece model differs from"),
    ],
    ids=["architecture", "size", "vocabulary"],
)
def test_a_checkpoint_of_another_model_is_refused_in_one_line(tiny_checkpoints, tmp_path, capsys, other, difference):
    first, second = tiny_checkpoints(architecture="rnnsearch"), tmp_path / "other.ckpt"
    lines = other.pop("tokenizer_lines", None)
    ckpt = torch.load(tiny_checkpoints(**other), weights_only=True)
    if lines:  # another SentencePiece model of the same size: trained on fewer lines
        ckpt["nmt"]["tokenizer"] = tiny_tokenizer(lines=lines).to_bytes()
    torch.save(ckpt, second)
    out = tmp_path / "mean.ckpt"
    assert main(["average", str(first), str(second), "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"nmt average: error: {second}: {difference}"), err
    assert str(first) in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def run_directory(root: Path, directory: Path) -> Path:
    """A run's checkpoints/ as `nmt fit` leaves it with ModelCheckpoint(monitor val/bleu, save_top_k 3,
    filename best-{epoch:03d}) and ResumeCheckpoint: each file carries the global step it was saved at and the
    ModelCheckpoint state of that moment (best_k_models: absolute paths, where the run was trained)."""
    checkpoints = root / "checkpoints"
    checkpoints.mkdir(parents=True)
    trained_in = "/elsewhere/run/checkpoints"  # the run was moved: files are matched by name
    scores = {"best-epoch=000.ckpt": 10.0, "best-epoch=001.ckpt": 30.0, "best-epoch=002.ckpt": 20.0}
    files = {  # name: (seed, global step, best_k_models recorded in it)
        "best-epoch=000.ckpt": (0, 5, {"best-epoch=000.ckpt": 10.0}),
        "best-epoch=001.ckpt": (1, 10, {"best-epoch=000.ckpt": 10.0, "best-epoch=001.ckpt": 30.0}),
        # an older record of the deleted best-epoch=003 and of a different score of 002 are overridden below
        "best-epoch=002.ckpt": (2, 15, {**scores, "best-epoch=003.ckpt": 50.0}),
        "last.ckpt": (2, 15, scores),
        "early.ckpt": (3, 2, {"best-epoch=002.ckpt": 99.0, "best-epoch=003.ckpt": 50.0}),
    }
    for name, (seed, step, recorded) in files.items():
        source = tiny_checkpoint(directory, architecture="rnnsearch", seed=seed)
        ckpt = torch.load(source, weights_only=True)
        state = {"monitor": "val/bleu", "best_k_models": {f"{trained_in}/{k}": torch.tensor(v) for k, v in
                                                          recorded.items()}}  # fmt: skip
        ckpt |= {"global_step": step, "epoch": step // 5, "callbacks": {MODEL_CHECKPOINT: state}}
        torch.save(ckpt, checkpoints / name)
    torch.save({"state_dict": {}, "nmt": {"exported": {}}}, checkpoints / "exported.ckpt")  # no global_step: skipped
    return root


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return run_directory(tmp_path_factory.mktemp("run") / "runs" / "tiny", tmp_path_factory.mktemp("seeds"))


@pytest.mark.parametrize(
    ("rule", "picked"),
    [
        (["--best", "2"], ["best-epoch=001.ckpt", "best-epoch=002.ckpt"]),
        (["--best", "3"], ["best-epoch=001.ckpt", "best-epoch=002.ckpt", "best-epoch=000.ckpt"]),
        (["--last", "2"], ["best-epoch=002.ckpt", "best-epoch=001.ckpt"]),  # last.ckpt: the same step as 002
        (["--last", "4"], ["best-epoch=002.ckpt", "best-epoch=001.ckpt", "best-epoch=000.ckpt", "early.ckpt"]),
    ],
)
def test_the_run_directory_forms_pick_the_right_files(run, tmp_path, capsys, rule, picked):
    out = tmp_path / "mean.ckpt"
    assert main(["average", "--run", str(run), *rule, "--output", str(out)]) == 0
    averaged = torch.load(out, weights_only=True)["nmt"]["exported"]["averaged"]
    assert [origin["from"] for origin in averaged] == picked
    each = [weights(run / "checkpoints" / name) for name in picked]
    name = "output.W_o.weight"
    expected = (sum(w[f"model.{name}"].double() for w in each) / len(each)).float()
    assert torch.equal(weights(out)[f"model.{name}"], expected)
    assert main(["average", "--run", str(run / "checkpoints"), *rule, "--output", str(out)]) == 0  # the folder too


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (
            ["--run", "RUN", "--best", "4"],
            "RUN/checkpoints: --best 4, but its checkpoints record the val/bleu of 3 "
            "file(s) here; keep the N best with ModelCheckpoint(monitor: val/bleu, save_top_k: N)",
        ),
        (["--run", "RUN", "--last", "5"], "RUN/checkpoints: --last 5, but it holds checkpoints of 4 different step(s)"),
        (["--run", "RUN"], "--run: needs one of --best N and --last N"),
        (["--run", "RUN", "--best", "1", "--last", "1"], "--run: needs one of --best N and --last N"),
        (["--best", "2"], "--best: needs --run DIR"),
        (["CKPT"], "command line: give two checkpoints or more (CKPT CKPT...), or --run DIR with --best N or --last N"),
        (["--run", "RUN", "--best", "0"], "--best"),
    ],
)
def test_bad_requests_are_one_line(run, checkpoint, tmp_path, capsys, argv, error):
    argv = [{"RUN": str(run), "CKPT": str(checkpoint)}.get(a, a) for a in argv]
    out = tmp_path / "mean.ckpt"
    assert main(["average", *argv, "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"nmt average: error: {error.replace('RUN', str(run))}"), err
    assert len(err.strip().splitlines()) == 1 and not out.exists()


def test_an_input_is_never_overwritten(tiny_checkpoints, tmp_path, capsys):
    first = tmp_path / "a.ckpt"
    shutil.copy(tiny_checkpoints(architecture="rnnsearch"), first)
    before = first.read_bytes()
    assert main(["average", str(first), str(tiny_checkpoints(architecture="rnnsearch", seed=1)), "--output",
                 str(first)]) == 2  # fmt: skip
    assert first.read_bytes() == before
