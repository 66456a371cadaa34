"""``nmt evaluate``: sacrebleu scores with signatures, JSON output, line-count checks, and translating
with a checkpoint exactly as ``nmt translate`` does."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sacrebleu

from nmt.cli import main
from tests.factories import multi30k_lines, tiny_checkpoint

REFS = multi30k_lines("test_2016_flickr", "fr", 5)
SRCS = multi30k_lines("test_2016_flickr", "en", 5)


def write(path: Path, lines: list[str]) -> str:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return str(path)


def evaluate(args: list[str], capsys) -> tuple[int, str, str]:
    status = main(["evaluate", *args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_a_reference_against_itself_scores_100(tmp_path, capsys):
    ref = write(tmp_path / "ref.fr", REFS)
    status, out, _ = evaluate(["--hyp", ref, "--ref", ref], capsys)
    assert status == 0
    bleu, chrf, ter = out.splitlines()
    assert bleu.startswith("BLEU|nrefs:1|case:mixed|") and " = 100.00 " in bleu
    assert chrf.startswith("chrF2|nrefs:1|case:mixed|") and chrf.endswith(" = 100.00")
    assert ter.startswith("TER|nrefs:1|case:mixed|") and ter.endswith(" = 0.00")


def test_json_matches_sacrebleu(tmp_path, capsys):
    hyps = [r.upper() if i % 2 else r for i, r in enumerate(REFS)]
    hyp, ref = write(tmp_path / "hyp.fr", hyps), write(tmp_path / "ref.fr", REFS)
    status, out, _ = evaluate(["--hyp", hyp, "--ref", ref, "--json", "--lowercase"], capsys)
    assert status == 0
    report = json.loads(out)
    assert report["sentences"] == 5 and report["hypotheses"] == hyp and report["references"] == [ref]
    assert report["bleu"]["score"] == pytest.approx(100.0) and "case:lc" in report["bleu"]["signature"]
    cased = json.loads(evaluate(["--hyp", hyp, "--ref", ref, "--json"], capsys)[1])
    assert cased["bleu"]["score"] == pytest.approx(sacrebleu.corpus_bleu(hyps, [REFS]).score)
    assert cased["chrf"]["score"] == pytest.approx(sacrebleu.corpus_chrf(hyps, [REFS]).score)
    # TER is case-sensitive unless --lowercase (sacrebleu's own TER default is case-insensitive)
    assert cased["ter"]["score"] == pytest.approx(sacrebleu.corpus_ter(hyps, [REFS], case_sensitive=True).score)
    assert report["ter"]["score"] == pytest.approx(0.0)


@pytest.mark.parametrize("n_hyp,n_ref,culprit,line", [(4, 5, "ref.fr", 5), (5, 3, "hyp.fr", 4)])
def test_different_line_counts_name_the_file_and_line(tmp_path, capsys, n_hyp, n_ref, culprit, line):
    hyp, ref = write(tmp_path / "hyp.fr", REFS[:n_hyp]), write(tmp_path / "ref.fr", REFS[:n_ref])
    status, out, err = evaluate(["--hyp", hyp, "--ref", ref], capsys)
    assert status == 2 and out == ""
    assert err.startswith(f"nmt evaluate: error: {tmp_path / culprit}:{line}: ") and err.count("\n") == 1


def test_checkpoint_translations_are_those_of_translate(tmp_path, capsys):
    ckpt = str(tiny_checkpoint(tmp_path, seed=3))
    src, ref = write(tmp_path / "src.en", SRCS), write(tmp_path / "ref.fr", REFS)
    options = ["--beam-size", "3", "--max-length-a", "1.0", "--max-length-b", "3", "--batch-tokens", "40"]
    status, out, _ = evaluate(
        ["--checkpoint", ckpt, "--src", src, "--ref", ref, "--json", "--output", str(tmp_path / "hyp.fr"), *options],
        capsys,
    )
    assert status == 0 and json.loads(out)["sentences"] == 5
    assert main(["translate", "--checkpoint", ckpt, "--input", src, *options]) == 0
    assert capsys.readouterr().out == (tmp_path / "hyp.fr").read_text(encoding="utf-8")

    status, _, err = evaluate(
        ["--checkpoint", ckpt, "--src", src, "--ref", write(tmp_path / "short", REFS[:2])], capsys
    )
    assert status == 2 and f"{src}:3: " in err


def test_hyp_or_checkpoint_is_required(tmp_path, capsys):
    ref = write(tmp_path / "ref.fr", REFS)
    status, out, err = evaluate(["--ref", ref], capsys)
    assert status == 2 and out == ""  # one line, not the usage
    assert err == "nmt evaluate: error: command line: give either --hyp, or --checkpoint with --src\n"
