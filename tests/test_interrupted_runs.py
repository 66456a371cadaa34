"""A streaming command stopped half-way (Ctrl-C, SIGTERM, SIGKILL) never leaves a short file under the output's
name: Ctrl-C (exit 130) and SIGTERM (exit 143) unwind and remove the temporary file; SIGKILL cannot be caught,
and leaves only the temporary ``.NAME.*.partial`` file, which is clearly not the output."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # trains or starts `nmt` subprocesses: not in the fast tier

ROOT = Path(__file__).resolve().parents[1]


def interruptible() -> None:
    """In the child before it runs nmt: Ctrl-C's default action. A shell without job control starts a background
    command with SIGINT ignored, and an ignored signal stays ignored across exec, so under such a test runner
    Python would not turn Ctrl-C into KeyboardInterrupt (as a shell user expects of a background job)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(args: list[str], first_lines: bytes) -> subprocess.Popen:
    """`nmt ARGS` reading stdin, which stays open after `first_lines`: the run is mid-way until we stop it."""
    process = subprocess.Popen(
        [sys.executable, "-m", "nmt", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        preexec_fn=interruptible,
    )
    process.stdin.write(first_lines)
    process.stdin.flush()
    return process


def wait_for(condition, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the command did not get going"
        time.sleep(0.1)


def partial_files(directory: Path) -> list[Path]:
    return sorted(directory.glob(".out.txt*.partial"))


STOPPED = {  # signal -> (exit status, stderr)
    signal.SIGINT: (130, "nmt translate: interrupted\n"),
    signal.SIGTERM: (128 + signal.SIGTERM, "nmt translate: terminated\n"),
}


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=["Ctrl-C", "SIGTERM", "SIGKILL"])
def test_translate_stopped_half_way(sig, checkpoint, tmp_path):
    out = tmp_path / "out.txt"
    args = ["translate", "--checkpoint", str(checkpoint), "--output", str(out), "--threads", "1", "--no-progress"]
    process = start(args, b"a man rides a bike\nthe dog\n")
    try:
        # half-way: the first two lines are translated and already in the temporary file
        wait_for(lambda: any(p.read_bytes().count(b"\n") == 2 for p in partial_files(tmp_path)))
        process.send_signal(sig)
        process.wait(timeout=60)
    finally:
        process.kill()
        process.wait()
    err = process.stderr.read().decode()
    assert not out.exists(), "a short file under the final name"
    if sig in STOPPED:
        assert (process.returncode, err) == STOPPED[sig]
        assert partial_files(tmp_path) == []
    else:
        assert process.returncode == -signal.SIGKILL
        (left,) = partial_files(tmp_path)
        assert left.read_text().count("\n") == 2  # what was done, under a name that says it is incomplete


def test_score_stopped_half_way(checkpoint, tmp_path):
    out = tmp_path / "out.txt"
    args = [
        "score", "--checkpoint", str(checkpoint), "--phrase-table", "-", "--output", str(out),
        "--window", "2", "--threads", "1", "--device", "cpu",
    ]  # fmt: skip
    process = start(args, b"a ||| un ||| 0.5\nb ||| deux ||| 0.5\nc ||| trois ||| 0.5\n")
    try:
        wait_for(lambda: bool(partial_files(tmp_path)))
        time.sleep(1.0)  # let the first window be scored
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == 128 + signal.SIGTERM
    assert process.stderr.read().decode().splitlines()[-1] == "nmt score: terminated"
    assert not out.exists() and partial_files(tmp_path) == []
