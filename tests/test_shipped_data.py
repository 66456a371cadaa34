"""The Multi30k English–French text ships in data/multi30k, where the configs' default data_dir points; without
it, `nmt fit` says in one line how to get it."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from nmt.cli import main as nmt_main

ROOT = Path(__file__).resolve().parents[1]
LINES = {"train": 29_000, "val": 1_014, "test_2016_flickr": 1_000}


@pytest.mark.parametrize("split", LINES)
def test_the_repository_ships_multi30k_english_and_french(split: str) -> None:
    directory = ROOT / "data" / "multi30k"
    counts = []
    for lang in ("en", "fr"):
        with gzip.open(directory / f"{split}.{lang}.gz", "rb") as f:
            lines = f.read().split(b"\n")
        assert lines[-1] == b"" and all(line.strip() for line in lines[:-1])  # whole lines, none blank
        b"\n".join(lines).decode("utf-8")  # UTF-8 throughout
        counts.append(len(lines) - 1)
    assert counts == [LINES[split]] * 2
    assert "data/fetch_multi30k.sh" in (directory / "README.md").read_text()


def test_a_missing_corpus_is_one_line_that_says_how_to_get_it(tmp_path: Path, capsys, monkeypatch) -> None:
    """Outside the repository root the default data_dir (data/multi30k) is not there."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NMT_DATA_DIR", raising=False)
    assert nmt_main(["fit", "--config", str(ROOT / "configs" / "tiny.yaml")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.splitlines()[-1] == (
        "nmt fit: error: data/multi30k/train.en.gz: cannot open: No such file or directory (data_dir data/multi30k, "
        f"relative to the working directory {tmp_path}); data/fetch_multi30k.sh fetches Multi30k (its English and "
        "French ship in the repository's data/multi30k), or set --data.data_dir or NMT_DATA_DIR to the corpus "
        "directory"
    )
    assert not (tmp_path / "runs").exists()
