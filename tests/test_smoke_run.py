"""The README's smoke run learns something a person can see: `nmt fit --config configs/tiny.yaml`, then
`nmt translate` of some of the sentences it was trained on gives French close to their references."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
import sacrebleu
import yaml
from test_training import ROOT, run_nmt

pytestmark = pytest.mark.slow  # trains and starts `nmt` subprocesses

TINY = ROOT / "configs" / "tiny.yaml"
# The sentences translated: the first lines of the training subset, those the config also validates on.
SENTENCES = 20
# BLEU of the beam-5 translations of these training sentences against their references. An untrained model
# (nothing, or the same few frequent pieces) scores near 0; the smoke run scored 22.6 when measured (the README's
# smoke run). The floor sits at about half of that: a run that learnt nothing fails, while the run-to-run spread
# of a model this small (another CPU, another torch build: a few BLEU on 20 sentences) passes.
BLEU_FLOOR = 10.0


def first_lines(path: Path, n: int) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [next(f).rstrip("\n") for _ in range(n)]


def test_the_smoke_run_translates_its_own_training_sentences(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("NMT_DATA_DIR", raising=False)  # the config's own data/multi30k, as the README runs it
    run = tmp_path / "run"
    fit = run_nmt(
        ["fit", "--config", "configs/tiny.yaml", "--trainer.default_root_dir", str(run),
         "--data.cache_dir", str(tmp_path / "cache")],
        cwd=ROOT,
    )  # fmt: skip
    assert fit.returncode == 0, fit.stderr[-3000:]
    checkpoint = run / "checkpoints" / "best.ckpt"
    assert checkpoint.is_file()

    data = yaml.safe_load(TINY.read_text())["data"]
    corpus = ROOT / data["data_dir"]
    assert data["val"]["src"] == data["train"]["src"] and data["val"]["tgt"] == data["train"]["tgt"]
    assert SENTENCES <= data["val"]["limit"] <= data["train"]["limit"]
    sources = first_lines(corpus / data["train"]["src"], SENTENCES)
    references = first_lines(corpus / data["train"]["tgt"], SENTENCES)
    (tmp_path / "train.en").write_text("\n".join(sources) + "\n", encoding="utf-8")

    translate = run_nmt(
        ["translate", "--checkpoint", str(checkpoint), "--input", str(tmp_path / "train.en"),
         "--output", str(tmp_path / "train.hyp.fr"), "--beam-size", "5", "--device", "cpu"],
        cwd=tmp_path,
    )  # fmt: skip
    assert translate.returncode == 0, translate.stderr[-3000:]
    hypotheses = (tmp_path / "train.hyp.fr").read_text(encoding="utf-8").splitlines()
    assert len(hypotheses) == SENTENCES
    assert all(h.strip() for h in hypotheses), hypotheses
    bleu = sacrebleu.corpus_bleu(hypotheses, [references]).score
    assert bleu > BLEU_FLOOR, (bleu, hypotheses)
