"""``nmt translate`` end to end on tiny real checkpoints: streaming through a pipe, line alignment, output
formats, atomic output files and clean errors."""

from __future__ import annotations

import gzip
import os
import queue
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from torch import nn

from nmt.cli import main
from nmt.data.tokenizer import EOS
from nmt.inference import Translator
from tests.factories import argv, multi30k_lines, tiny_checkpoint

LINES = multi30k_lines("test_2016_flickr", "en", 4)


@pytest.fixture(scope="module")
def checkpoints(tiny_checkpoints) -> dict[str, Path]:
    return {
        "rnnsearch": tiny_checkpoints(architecture="rnnsearch", seed=1),
        "rnnsearch2": tiny_checkpoints(architecture="rnnsearch", seed=2),
        "rnnencdec": tiny_checkpoints(architecture="rnnencdec", seed=1),
    }


def run(args: list[str], capsys) -> tuple[int, str, str]:
    """`nmt translate ARGS` in this process: (exit status, stdout, stderr)."""
    status = main(["translate", "--no-progress", *args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


@pytest.mark.slow
def test_translate_streams_through_an_open_pipe(checkpoints):
    process = subprocess.Popen(
        [sys.executable, "-m", "nmt", "translate", "--threads", "1", "--checkpoint", str(checkpoints["rnnsearch"])],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=Path(__file__).parents[1],
    )
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()
    try:
        for i, sentence in enumerate(LINES[:2]):
            process.stdin.write(sentence.encode() + b"\n")
            process.stdin.flush()  # stdin stays open: the answer must come before end of input
            answer = lines.get(timeout=60 if i == 0 else 20)
            assert answer.endswith(b"\n") and answer.strip()
        process.stdin.close()
        assert process.wait(timeout=20) == 0
        assert lines.empty()
    finally:
        process.kill()
        process.wait()


def test_every_line_gets_one_output_line(checkpoints, tmp_path, capsys):
    long_line = " ".join(LINES) * 3
    source = write(tmp_path / "in.txt", [LINES[0], "", long_line, "   ", LINES[1]])
    options = "--max-input-tokens 80 --beam-size 2 --batch-tokens 30"
    status, out, err = run(argv("--checkpoint", checkpoints["rnnsearch"], "--input", source, options), capsys)
    assert status == 0
    outputs = out.split("\n")
    assert len(outputs) == 6 and outputs[-1] == ""  # five lines, each ended
    assert outputs[1] == "" and outputs[3] == ""  # empty (or blank) in, empty out
    assert all(outputs[i] for i in (0, 2, 4))  # the over-long line is translated, not dropped
    warning = rf"warning: {re.escape(str(source))}:3: \d+ pieces; only the first 80 are read \(--max-input-tokens\)"
    assert re.search(warning, err)
    assert len(err.strip().splitlines()) == 1


def test_output_follows_input_order_whatever_the_batching(checkpoints, tmp_path, capsys):
    lines = [LINES[2], LINES[0] + " " + LINES[1], "Dogs.", LINES[3]]  # lengths out of order
    ckpt = str(checkpoints["rnnsearch"])
    options = ["--checkpoint", ckpt, "--beam-size", "2", "--max-length-a", "1", "--max-length-b", "2"]
    alone = []
    for i, line in enumerate(lines):
        status, out, _ = run([*options, "--input", str(write(tmp_path / f"{i}.txt", [line]))], capsys)
        alone.append(out)
    for batch_tokens in ("1", "25", "1000"):
        status, out, _ = run(
            [*options, "--input", str(write(tmp_path / "all.txt", lines)), "--batch-tokens", batch_tokens], capsys
        )
        assert status == 0 and out == "".join(alone)


def attending_and_ending(model: nn.Module) -> None:
    """Attention weights that differ between source pieces (at initialisation v_a = 0: every α uniform), and EOS
    likely enough that translations end before the length limit."""
    nn.init.normal_(model.attention.v_a, 0.0, 1.0)
    model.output.W_o.bias[EOS] = 2.0


def test_scores_and_alignment_columns(tmp_path, capsys):
    """LOG_PROB is log p(translation + EOS | source), what `Translator.score` gives the pair and the n-best list
    prints; ALIGNMENT links each target piece j to the source piece i its attention weights are largest on (here
    recomputed by teacher forcing, `Translator.attention`), links to the source EOS left out."""
    ckpt = tiny_checkpoint(
        tmp_path, architecture="rnnsearch", init_std=0.4, attention_init_std=0.3, edit=attending_and_ending
    )
    sentences = [multi30k_lines("test_2016_flickr", "en", 8)[i] for i in (0, 1, 7)]
    options = ["--checkpoint", str(ckpt), "--input", str(write(tmp_path / "in.txt", sentences)), "--scores"]
    status, out, _ = run([*options, "--alignment"], capsys)
    assert status == 0
    _, nbest, _ = run([*options, "--alignment", "--n-best", "1"], capsys)
    translator = Translator.load(ckpt, device="cpu")
    rows = [line.split("\t") for line in out.splitlines()]
    exact = translator.score(sentences, [text for text, _, _ in rows]).logprob
    for sentence, (text, log_prob, links), expected, listed in zip(
        sentences, rows, exact, nbest.splitlines(), strict=True
    ):
        assert len(text.split()) >= 3 and len({link.split("-")[0] for link in links.split()}) >= 2
        assert float(log_prob) == pytest.approx(expected, abs=1e-4)
        assert listed.split(" ||| ")[1:] == [text, log_prob, log_prob, links]  # SCORE = LOG_PROB: no length penalty
        alpha = translator.attention(sentence, text).alpha  # (T + 1, S): a row per target piece and EOS
        eos = alpha.shape[1] - 1
        assert links.split() == [f"{i}-{j}" for j, i in enumerate(alpha[:-1].argmax(-1).tolist()) if i < eos]


@pytest.mark.parametrize("architecture", ["rnnsearch", "rnnencdec"])
def test_bfloat16_translates_every_line_with_float32_scores(checkpoints, tmp_path, capsys, architecture):
    """--dtype bfloat16: the same line contract; where it finds the float32 translation (most lines), it gives
    it about the float32 log-probability, printed from float32 sums."""
    source = write(tmp_path / "in.txt", [LINES[0], "", *LINES[1:]])
    options = ["--checkpoint", str(checkpoints[architecture]), "--input", str(source), "--scores"]
    found = {}
    for dtype in ("float32", "bfloat16"):
        status, out, err = run([*options, "--dtype", dtype], capsys)
        assert status == 0 and err == ""
        found[dtype] = [line.split("\t") for line in out.split("\n")[:-1]]
        assert len(found[dtype]) == len(LINES) + 1 and found[dtype][1] == ["", "0.0000"]
    same = [(a, b) for a, b in zip(found["float32"], found["bfloat16"], strict=True) if a[0] == b[0] and a[0]]
    assert len(same) >= 2
    for (_, exact), (_, fast) in same:
        assert float(fast) == pytest.approx(float(exact), rel=0.02, abs=0.1)


def test_n_best_moses_format(checkpoints, tmp_path, capsys):
    source = write(tmp_path / "in.txt", LINES[:2])
    options = "--n-best 3 --beam-size 4 --length-penalty gnmt --alpha 0.6 --scores"
    status, out, _ = run(argv("--checkpoint", checkpoints["rnnsearch"], "--input", source, options), capsys)
    assert status == 0
    rows = [line.split(" ||| ") for line in out.splitlines()]
    assert [r[0] for r in rows] == ["0"] * 3 + ["1"] * 3
    for sentence_id in ("0", "1"):
        scores = [float(r[2]) for r in rows if r[0] == sentence_id]
        assert scores == sorted(scores, reverse=True)
    assert all(len(r) == 4 and float(r[3]) <= float(r[2]) for r in rows)  # log_prob ≤ score / lp, lp ≥ 1


def test_n_best_first_equals_plain_output_and_ensemble_of_a_model_with_itself(checkpoints, tmp_path, capsys):
    source = write(tmp_path / "in.txt", LINES[:3])
    ckpt = str(checkpoints["rnnsearch"])
    _, plain, _ = run(["--checkpoint", ckpt, "--input", str(source), "--beam-size", "3"], capsys)
    _, nbest, _ = run(["--checkpoint", ckpt, "--input", str(source), "--beam-size", "3", "--n-best", "3"], capsys)
    _, twice, _ = run(["--checkpoint", ckpt, "--ensemble", ckpt, "--input", str(source), "--beam-size", "3"], capsys)
    firsts = [line.split(" ||| ")[1] for line in nbest.splitlines()[::3]]
    assert plain.splitlines() == firsts
    assert twice == plain
    status, ensembled, _ = run(
        ["--checkpoint", ckpt, "--ensemble", str(checkpoints["rnnsearch2"]), "--input", str(source)], capsys
    )
    assert status == 0 and len(ensembled.splitlines()) == 3


def gzip_file(path: Path, lines: list[str]) -> Path:
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("".join(line + "\n" for line in lines))
    return path


def test_gzip_output(checkpoints, tmp_path, capsys):
    source = gzip_file(tmp_path / "in.txt.gz", LINES[:2])
    target = tmp_path / "out.txt.gz"
    status, _, _ = run(
        ["--checkpoint", str(checkpoints["rnnsearch"]), "--input", str(source), "--output", str(target)], capsys
    )
    assert status == 0
    assert len(gzip.open(target, "rt", encoding="utf-8").read().splitlines()) == 2


def test_output_file_appears_only_when_complete(checkpoints, tmp_path, capsys):
    source = gzip_file(tmp_path / "in.txt.gz", LINES[:2])
    target = tmp_path / "out.txt"
    status, out, _ = run(
        ["--checkpoint", str(checkpoints["rnnsearch"]), "--input", str(source), "--output", str(target)], capsys
    )
    assert status == 0 and out == ""
    assert len(target.read_text(encoding="utf-8").splitlines()) == 2

    bad = tmp_path / "bad.txt"
    bad.write_bytes(LINES[0].encode() + b"\n" + b"caf\xe9\n")
    failed = tmp_path / "failed.txt"
    status, _, err = run(
        ["--checkpoint", str(checkpoints["rnnsearch"]), "--input", str(bad), "--output", str(failed)], capsys
    )
    assert status == 2 and f"{bad}:2: invalid UTF-8" in err
    assert not failed.exists()
    assert sorted(os.listdir(tmp_path)) == ["bad.txt", "in.txt.gz", "out.txt"]  # no temporary file left


@pytest.mark.slow
def test_invalid_utf8_on_stdin_is_one_line_and_status_2(checkpoints):
    result = subprocess.run(
        [sys.executable, "-m", "nmt", "translate", "--threads", "1", "--checkpoint", str(checkpoints["rnnsearch"])],
        input=LINES[0].encode() + b"\n\xff\xfe broken\n",
        capture_output=True,
        timeout=120,
        cwd=Path(__file__).parents[1],
    )
    assert result.returncode == 2
    assert len(result.stdout.decode().splitlines()) == 1  # the good line before it was translated
    assert re.fullmatch(r"nmt translate: error: -:2: invalid UTF-8 .*\n", result.stderr.decode())


def test_replace_encoding_errors_translates_the_line(checkpoints, tmp_path, capsys):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"caf\xe9\n")
    status, out, _ = run(
        ["--checkpoint", str(checkpoints["rnnsearch"]), "--input", str(bad), "--encoding-errors", "replace"], capsys
    )
    assert status == 0 and len(out.splitlines()) == 1


def test_alignment_needs_attention_and_bad_options_are_refused(checkpoints, tmp_path, capsys):
    source = write(tmp_path / "in.txt", LINES[:1])
    status, out, err = run(
        ["--checkpoint", str(checkpoints["rnnencdec"]), "--input", str(source), "--alignment"], capsys
    )
    assert status == 2 and out == ""
    assert re.fullmatch(r"nmt translate: error: .*rnnencdec.*: --alignment needs an attention model.*\n", err)
    status, out, err = run(["--checkpoint", str(checkpoints["rnnsearch"]), "--beam-size", "2", "--n-best", "3"], capsys)
    assert status == 2 and out == ""  # one line naming the option, not the usage
    assert re.fullmatch(r"nmt translate: error: --n-best: 3 is more than --beam-size 2: .*\n", err)


@pytest.mark.slow
def test_missing_output_directory_is_a_one_line_error(tmp_path):
    checkpoint = tiny_checkpoint(tmp_path)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "nmt",
            "translate",
            "--checkpoint",
            str(checkpoint),
            "--output",
            str(tmp_path / "no" / "x"),
        ],
        input="a man\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "output directory does not exist" in result.stderr


def test_translate_sources_equals_translate_of_the_same_lines(checkpoints):
    """The server's entry point (lines encoded by the caller, no reader thread) gives what `translate` gives,
    in the order of its sources whatever their lengths, blank and over-long lines included."""
    from nmt.data.encoding import encode_sources
    from nmt.decoding import SearchConfig

    translator = Translator.load(checkpoints["rnnsearch"], device="cpu")
    lines = [LINES[2], LINES[0] + " " + LINES[1], "", "Dogs.", LINES[3] * 3]
    search = SearchConfig(beam_size=3, n_best=2, max_length_a=1, max_length_b=3)
    expected = list(translator.translate(lines, search, batch_tokens=20, max_input_tokens=12, warning_prefix=None))
    sources = encode_sources(translator.tokenizer, lines, max_tokens=12, where=lambda n: f"request:{n}")
    got = translator.translate_sources(sources, search, batch_tokens=20)
    assert [t.line for t in got] == [1, 2, 3, 4, 5]
    assert [[(c.text, c.tokens, c.score) for c in t.candidates] for t in got] == [
        [(c.text, c.tokens, c.score) for c in t.candidates] for t in expected
    ]
    assert got[2].candidates[0].tokens == []  # the blank line
    with pytest.raises(ValueError, match="distinct number"):
        translator.translate_sources([sources[0], sources[0]], search)
