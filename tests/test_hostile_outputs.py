"""Hostile outputs × every command that writes one: the "Hostile input" table of docs/hostile-input.md, output rows.

- An output that is one of the command's inputs under any name (the same path, another spelling of it, a symbolic
  or a hard link, the checkpoint) is refused before anything is written: the input survives.
- Standard output, devices and FIFOs (and links to them: ``/dev/stdout``) are written into, never renamed over.
- A closed pipe ends the command quietly (exit 141, no traceback, no "Exception ignored", no abort of a reader
  thread); a closed, full or non-UTF-8 standard output is one line naming stdout.
- An output that is a directory, in a directory that cannot be written, or that fills the disk is one line
  naming it, before the work where it can be known then, and no file or temporary file is left.
- Two runs writing the same output at once each write a temporary file of their own: the final file is whole.

Errors are one line, ``nmt CMD: error: PATH: …``, exit status 2. Device nodes are made with ``mknod`` in the test's
own directory (needs root; skipped otherwise); the system's /dev files are only ever opened, never written as paths.
"""

from __future__ import annotations

import errno
import os
import re
import resource
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from factories import multi30k_lines

from nmt.cli import main as nmt_main

ROOT = Path(__file__).resolve().parents[1]
SHORT_SEARCH = ["--beam-size", "1", "--max-length-a", "0", "--max-length-b", "6", "--threads", "1"]
LINES = multi30k_lines("train", "en", 3000)  # enough to keep a command busy after its reader has gone
# Two lines the tiny model of `tiny_checkpoint(seed=0)` translates into non-ASCII text ("Jë …", "… surprès …").
NON_ASCII = ["A man in a green hat running.", "Large earth moving equipment at work."]
METRICS = "step,train/loss\n1,2.5\n2,2.0\n"


@pytest.fixture(scope="module")
def many_lines(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("text") / "many.en"
    path.write_text("".join(line + "\n" for line in LINES), encoding="utf-8")
    return path


def nmt(*args: str, timeout: float = 180, **kwargs) -> subprocess.CompletedProcess:
    """`nmt ARGS` in a process of its own (stdout and stderr captured unless given)."""
    kwargs.setdefault("stdout", subprocess.PIPE)
    kwargs.setdefault("stderr", subprocess.PIPE)
    return subprocess.run([sys.executable, "-m", "nmt", *args], cwd=ROOT, timeout=timeout, check=False, **kwargs)


def assert_quiet_stderr(err: str) -> None:
    for noise in ("Traceback", "Exception ignored", "terminate called", "Fatal Python error"):
        assert noise not in err, err


def assert_one_line_error(status: int, err: str, command: str, path: str, what: str) -> None:
    assert_quiet_stderr(err)
    assert status == 2, (status, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert re.fullmatch(rf"nmt {command}: error: {re.escape(path)}: .*{what}.*", lines[0]), lines[0]


def leftovers(directory: Path) -> list[str]:
    """Temporary files left behind in `directory`."""
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".partial"))


def make_device(path: Path, minor: int) -> Path:
    """A character device like /dev/null (minor 3) or /dev/full (minor 7), made at `path`."""
    if os.geteuid() != 0:
        pytest.skip("mknod needs root")
    try:
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, minor))
    except PermissionError:
        pytest.skip("mknod is not permitted here")
    return path


# -- the commands, each with one output and the input files it reads ---------------------------------------------

# name -> (suffix of the output, argv given IN (an input: the kind in INPUT_KIND), OUT, and the paths of clean
# companion files TEXT (two lines), ONE (one line) and CKPT)
COMMANDS = {
    "translate --input": (
        ".txt",
        lambda i, o, f: ["translate", "--checkpoint", f["CKPT"], "--input", i, "--output", o],
    ),
    "translate --checkpoint": (
        ".txt",
        lambda i, o, f: ["translate", "--checkpoint", i, "--input", f["TEXT"], "--output", o],
    ),
    "evaluate --src": (
        ".txt",
        lambda i, o, f: ["evaluate", "--checkpoint", f["CKPT"], "--src", i, "--ref", f["TEXT"], "--output", o],
    ),
    "evaluate --ref": (
        ".txt",
        lambda i, o, f: ["evaluate", "--checkpoint", f["CKPT"], "--src", f["TEXT"], "--ref", i, "--output", o],
    ),
    "score --src": (
        ".txt",
        lambda i, o, f: ["score", "--checkpoint", f["CKPT"], "--src", i, "--tgt", f["TEXT"], "--output", o],
    ),
    "score --tgt": (
        ".txt",
        lambda i, o, f: ["score", "--checkpoint", f["CKPT"], "--src", f["TEXT"], "--tgt", i, "--output", o],
    ),
    "score --tsv": (".txt", lambda i, o, f: ["score", "--checkpoint", f["CKPT"], "--tsv", i, "--output", o]),
    "score --phrase-table": (
        ".txt",
        lambda i, o, f: ["score", "--checkpoint", f["CKPT"], "--phrase-table", i, "--output", o],
    ),
    "score --nbest": (
        ".txt",
        lambda i, o, f: ["score", "--checkpoint", f["CKPT"], "--nbest", i, "--src", f["ONE"], "--output", o],
    ),
    "embed --input": (".npy", lambda i, o, f: ["embed", "--checkpoint", f["CKPT"], "--input", i, "--output", o]),
    "plot-curves RUN": (".png", lambda i, o, f: ["plot-curves", i, "--output", o, "--dpi", "20"]),
    "plot-attention --checkpoint": (
        ".png",
        lambda i, o, f: ["plot-attention", "--checkpoint", i, "--src", "a man", "--output", o, "--dpi", "20"],
    ),
}
OPTIONS = {  # extra options, so that a run that is not refused stays short
    "translate": [*SHORT_SEARCH, "--no-progress"],
    "evaluate": SHORT_SEARCH,
    "score": ["--threads", "1", "--device", "cpu"],
    "embed": ["--device", "cpu"],
}
INPUT_KIND = {
    "translate --checkpoint": "checkpoint",
    "plot-attention --checkpoint": "checkpoint",
    "score --tsv": b"a man\tun homme\nthe dog\tle chien\n",
    "score --phrase-table": b"a man ||| un homme ||| 0.5\nthe dog ||| le chien ||| 0.25\n",
    "score --nbest": b"0 ||| un homme ||| d= -1 ||| -1\n0 ||| le chien ||| d= -2 ||| -2\n",
    "plot-curves RUN": METRICS.encode(),
}


def argv(command: str, given: Path | str, out: Path | str, files: dict[str, str]) -> list[str]:
    args = COMMANDS[command][1](str(given), str(out), files)
    return args + OPTIONS.get(args[0], [])


def companions(directory: Path, checkpoint: Path) -> dict[str, str]:
    (directory / "text.en").write_text("a man\nthe dog\n")
    (directory / "one.en").write_text("a man\n")
    return {"TEXT": str(directory / "text.en"), "ONE": str(directory / "one.en"), "CKPT": str(checkpoint)}


def write_input(command: str, path: Path, checkpoint: Path) -> bytes:
    kind = INPUT_KIND.get(command, b"a man\nthe dog\n")
    content = checkpoint.read_bytes() if kind == "checkpoint" else kind
    path.write_bytes(content)
    return content


# -- 1. an output that is an input: refused, whatever the name --------------------------------------------------

ALIASES = ["same path", "another spelling", "output is a symlink to the input", "input is a symlink", "hard link"]


@pytest.mark.parametrize("alias", ALIASES)
@pytest.mark.parametrize("command", COMMANDS)
def test_an_output_that_is_an_input_is_refused(command, alias, checkpoint, tmp_path, capsys):
    suffix = COMMANDS[command][0]
    real = tmp_path / f"data{suffix}"  # named like an output, so that the same path is a valid output name
    content = write_input(command, real, checkpoint)
    (tmp_path / "sub").mkdir()
    given, out = real, real
    if alias == "another spelling":
        out = tmp_path / "sub" / ".." / "." / real.name
    elif alias == "output is a symlink to the input":
        out = tmp_path / f"link{suffix}"
        out.symlink_to(real)
    elif alias == "input is a symlink":
        given = tmp_path / "link.in"
        given.symlink_to(real)
    elif alias == "hard link":
        out = tmp_path / f"hard{suffix}"
        os.link(real, out)
    status = nmt_main(argv(command, given, out, companions(tmp_path, checkpoint)))
    err = capsys.readouterr().err
    assert_one_line_error(
        status, err, command.split()[0], str(out), rf"is the same file as the input {re.escape(str(given))}"
    )
    assert real.read_bytes() == content, "the input was overwritten"
    assert Path(out).exists() and (alias != "output is a symlink to the input" or Path(out).is_symlink())
    assert leftovers(tmp_path) == []


@pytest.mark.slow
def test_stdout_appending_to_the_input_is_refused(checkpoint, tmp_path):
    """`nmt translate --input a.en >> a.en` would read its own output back, without end."""
    source = tmp_path / "a.en"
    source.write_text("a man\nthe dog\n")
    with open(source, "ab") as stdout:
        result = nmt("translate", "--checkpoint", str(checkpoint), "--input", str(source), *SHORT_SEARCH, stdout=stdout)
    assert_one_line_error(
        result.returncode, result.stderr.decode(), "translate", "stdout", "is the same file as the input"
    )
    assert source.read_text() == "a man\nthe dog\n"


# -- 1b. devices, FIFOs and links to stdout are written into, not renamed over -------------------------------------

WRITERS = ["translate --input", "evaluate --src", "score --src", "embed --input", "plot-curves RUN"]


def run_writer(command: str, out: Path, directory: Path, checkpoint: Path, capsys) -> tuple[int, str]:
    source = directory / f"source{COMMANDS[command][0]}"
    write_input(command, source, checkpoint)
    status = nmt_main(argv(command, source, out, companions(directory, checkpoint)))
    return status, capsys.readouterr().err


@pytest.mark.parametrize("command", WRITERS)
def test_a_device_output_is_written_into_not_replaced(command, checkpoint, tmp_path, capsys):
    null = make_device(tmp_path / f"null{COMMANDS[command][0]}", minor=3)
    status, err = run_writer(command, null, tmp_path, checkpoint, capsys)
    assert status == 0, err
    assert_quiet_stderr(err)
    assert stat.S_ISCHR(os.lstat(null).st_mode), "the device was replaced by a regular file"
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("command", WRITERS)
def test_a_full_device_is_one_line_naming_it(command, checkpoint, tmp_path, capsys):
    """ENOSPC while writing (a device like /dev/full, made here): one line, the device left as it is."""
    full = make_device(tmp_path / f"full{COMMANDS[command][0]}", minor=7)
    status, err = run_writer(command, full, tmp_path, checkpoint, capsys)
    assert_one_line_error(status, err, command.split()[0], str(full), "No space left on device")
    assert stat.S_ISCHR(os.lstat(full).st_mode)
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("command", ["translate --input", "embed --input"])
def test_a_fifo_output_is_written_into(command, checkpoint, tmp_path, capsys):
    fifo = tmp_path / f"fifo{COMMANDS[command][0]}"
    os.mkfifo(fifo)
    received: list[bytes] = []

    def read() -> None:
        with open(fifo, "rb") as f:  # blocks until the command opens the FIFO for writing
            received.append(f.read())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    status, err = run_writer(command, fifo, tmp_path, checkpoint, capsys)
    reader.join(timeout=60)
    if reader.is_alive():  # the command never opened the FIFO: let the reader go
        with open(fifo, "wb"):
            pass
        reader.join(timeout=10)
    assert status == 0, err
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode), "the FIFO was replaced by a regular file"
    data = received[0] if received else b""
    if command.startswith("embed"):
        with tempfile.TemporaryFile() as f:
            f.write(data)
            f.seek(0)
            assert np.load(f).shape[0] == 2
    else:
        assert data.count(b"\n") == 2
    assert leftovers(tmp_path) == []


@pytest.mark.slow
@pytest.mark.parametrize("command", ["translate --input", "score --src"])
def test_a_link_to_stdout_writes_to_stdout(command, checkpoint, tmp_path):
    """`--output /dev/stdout` (here a link of our own to /proc/self/fd/1): the output arrives on stdout, the link
    stays."""
    link = tmp_path / "stdout"
    link.symlink_to("/proc/self/fd/1")
    source = tmp_path / "source.txt"
    source.write_text("a man\nthe dog\n")
    result = nmt(*argv(command, source, link, companions(tmp_path, checkpoint)))
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.count(b"\n") == 2
    assert link.is_symlink()
    assert leftovers(tmp_path) == []


# -- 2. pipes and standard output ---------------------------------------------------------------------------------

STDOUT_COMMANDS = {
    "translate": lambda ckpt, text: ["translate", "--checkpoint", ckpt, "--input", text, *SHORT_SEARCH],
    "evaluate --hyp": lambda ckpt, text: ["evaluate", "--hyp", text, "--ref", text],
    "score": lambda ckpt, text: ["score", "--checkpoint", ckpt, "--src", text, "--tgt", text, *OPTIONS["score"]],
}


PIPE_CASES = [(command, "at once") for command in STDOUT_COMMANDS] + [
    (command, "after one line")
    for command in ("translate", "score")  # evaluate writes its 3 lines at once
]


@pytest.mark.slow
@pytest.mark.parametrize(("command", "when"), PIPE_CASES)
def test_a_closed_pipe_ends_quietly(command, when, checkpoint, many_lines):
    """`nmt … | head -1`: exit 141 (or 0 when everything was written before), nothing on stderr: no traceback,
    no "Exception ignored" at exit, no abort of the reader thread (exit 134)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "nmt", *STDOUT_COMMANDS[command](str(checkpoint), str(many_lines))],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    try:
        if when == "after one line":
            assert process.stdout.readline()
        process.stdout.close()
        err = process.stderr.read().decode()
        process.wait(timeout=180)
    finally:
        process.kill()
        process.wait()
    assert process.returncode in (0, 128 + signal.SIGPIPE), (process.returncode, err)
    assert_quiet_stderr(err)
    assert err == "" if command != "score" else all(line.startswith("nmt score: ") for line in err.splitlines())


def shell_stdout(args: list[str], redirect: str, **kwargs) -> subprocess.CompletedProcess:
    """`nmt ARGS REDIRECT` through sh: REDIRECT is `>&-` (stdout closed) or `> /dev/full` (the system's full
    device, opened for writing by the shell: nothing is replaced)."""
    command = 'exec "$0" -m nmt "$@" ' + redirect
    return subprocess.run(
        ["sh", "-c", command, sys.executable, *args],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        timeout=180,
        check=False,
        **kwargs,
    )


@pytest.mark.slow
@pytest.mark.parametrize("command", STDOUT_COMMANDS)
def test_closed_stdout_is_one_line(command, checkpoint, tmp_path):
    text = tmp_path / "text.en"
    text.write_text("a man\nthe dog\n")
    result = shell_stdout(STDOUT_COMMANDS[command](str(checkpoint), str(text)), ">&-")
    assert_one_line_error(
        result.returncode, result.stderr.decode(), command.split()[0], "stdout", "standard output is closed"
    )


@pytest.mark.slow
def test_closed_stdout_does_not_matter_with_an_output_file(checkpoint, tmp_path):
    text, out = tmp_path / "text.en", tmp_path / "out.txt"
    text.write_text("a man\nthe dog\n")
    args = STDOUT_COMMANDS["translate"](str(checkpoint), str(text)) + ["--output", str(out), "--no-progress"]
    result = shell_stdout(args, ">&-")
    assert result.returncode == 0, result.stderr.decode()
    assert out.read_text().count("\n") == 2


@pytest.mark.slow
@pytest.mark.parametrize("command", STDOUT_COMMANDS)
def test_full_stdout_is_one_line(command, checkpoint, tmp_path):
    text = tmp_path / "text.en"
    text.write_text("a man\nthe dog\n")
    result = shell_stdout(STDOUT_COMMANDS[command](str(checkpoint), str(text)), "> /dev/full")
    assert_one_line_error(
        result.returncode, result.stderr.decode(), command.split()[0], "stdout", "No space left on device"
    )


@pytest.mark.slow
def test_stdout_is_utf8_whatever_the_locale(checkpoint, tmp_path, capsys):
    text = tmp_path / "text.en"
    text.write_text("".join(line + "\n" for line in NON_ASCII))
    args = STDOUT_COMMANDS["translate"](str(checkpoint), str(text))
    assert nmt_main(args) == 0
    expected = capsys.readouterr().out
    assert not expected.isascii(), "the test needs a translation with a non-ASCII character"
    env = {**os.environ, "PYTHONIOENCODING": "ascii", "LC_ALL": "C", "LANG": "C"}
    result = nmt(*args, env=env)
    assert result.returncode == 0, result.stderr.decode()
    assert_quiet_stderr(result.stderr.decode())
    assert result.stdout.decode("utf-8") == expected


# -- 3. outputs that cannot be written ------------------------------------------------------------------------------

UNWRITABLE = [*WRITERS, "plot-attention --checkpoint"]


@pytest.mark.parametrize("command", UNWRITABLE)
def test_a_directory_output_is_refused_before_the_work(command, checkpoint, tmp_path, capsys):
    """Found before the model is loaded: the checkpoint given does not even exist."""
    directory = tmp_path / f"dir{COMMANDS[command][0]}"
    directory.mkdir()
    source = tmp_path / "source.txt"
    write_input(command, source, checkpoint)
    files = {**companions(tmp_path, checkpoint), "CKPT": str(tmp_path / "missing.ckpt")}
    given = files["CKPT"] if command.startswith("plot-attention") else source
    status = nmt_main(argv(command, given, directory, files))
    assert_one_line_error(status, capsys.readouterr().err, command.split()[0], str(directory), "is a directory")
    assert list(directory.iterdir()) == [] and leftovers(tmp_path) == []


@pytest.mark.parametrize("command", UNWRITABLE)
def test_an_unwritable_directory_is_refused_before_the_work(command, checkpoint, tmp_path, monkeypatch, capsys):
    """A read-only filesystem (EROFS; as root, permissions cannot be made to fail, so creating a file in that
    directory is made to fail as a read-only mount makes it fail)."""
    readonly = tmp_path / "readonly"
    readonly.mkdir()
    out = readonly / f"out{COMMANDS[command][0]}"
    real_mkstemp, real_open = tempfile.mkstemp, os.open

    def refuse(where: object) -> None:
        if where is not None and Path(os.fspath(where)).resolve().parent == readonly.resolve():
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fspath(where))

    def mkstemp(*args, **kwargs):
        refuse(Path(kwargs.get("dir") or ".") / "x")
        return real_mkstemp(*args, **kwargs)

    def open_(path, flags, *args, **kwargs):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            refuse(path)
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    monkeypatch.setattr(os, "open", open_)
    source = tmp_path / "source.txt"
    write_input(command, source, checkpoint)
    files = {**companions(tmp_path, checkpoint), "CKPT": str(tmp_path / "missing.ckpt")}
    given = files["CKPT"] if command.startswith("plot-attention") else source
    status = nmt_main(argv(command, given, out, files))
    assert_one_line_error(status, capsys.readouterr().err, command.split()[0], str(out), "Read-only file system")
    assert list(readonly.iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into any directory")
def test_a_directory_without_write_permission_is_refused(checkpoint, tmp_path, capsys):
    readonly = tmp_path / "readonly"
    readonly.mkdir()
    readonly.chmod(0o555)
    source, out = tmp_path / "source.txt", readonly / "out.txt"
    source.write_text("a man\n")
    try:
        status = nmt_main(argv("translate --input", source, out, companions(tmp_path, checkpoint)))
    finally:
        readonly.chmod(0o755)
    assert_one_line_error(status, capsys.readouterr().err, "translate", str(out), "Permission denied")


@pytest.mark.slow
@pytest.mark.parametrize("command", ["translate --input", "score --src", "embed --input"])
def test_running_out_of_space_while_writing_is_one_line(command, checkpoint, many_lines, tmp_path):
    """The file grows past what the disk (here: RLIMIT_FSIZE, EFBIG) allows half-way: one line naming the output,
    neither it nor a temporary file left."""
    out = tmp_path / f"out{COMMANDS[command][0]}"
    files = companions(tmp_path, checkpoint)
    files["TEXT"] = str(many_lines)

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))

    result = nmt(*argv(command, many_lines, out, files), preexec_fn=small_files)
    assert_one_line_error(result.returncode, result.stderr.decode(), command.split()[0], str(out), "File too large")
    assert not out.exists() and leftovers(tmp_path) == []


# -- 4. two runs writing the same output at once -------------------------------------------------------------------


def open_temporary_files(pid: int, name: str) -> list[str]:
    """The temporary files for output `name` that process `pid` has open."""
    found = []
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if f"/.{name}." in target and ".partial" in target:
            found.append(target)
    return found


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")
def test_two_embed_runs_on_the_same_output_each_write_a_whole_file(checkpoint, tmp_path, capsys):
    out = tmp_path / "same.npy"
    args = ["embed", "--checkpoint", str(checkpoint), "--input", "-", "--output", str(out), "--device", "cpu"]
    first, second = LINES[:4], LINES[4:10]
    runs = [
        subprocess.Popen(
            [sys.executable, "-m", "nmt", *args, "--batch-tokens", "2"],
            stdin=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=ROOT,
        )
        for _ in range(2)
    ]
    try:
        for run, lines in zip(runs, (first, second), strict=True):
            run.stdin.write("".join(line + "\n" for line in lines).encode())
            run.stdin.flush()
        deadline = time.monotonic() + 120
        while not all(open_temporary_files(run.pid, out.name) for run in runs):  # both are writing
            assert all(run.poll() is None for run in runs), "a run ended early"
            assert time.monotonic() < deadline, "the runs did not get going"
            time.sleep(0.1)
        for run in runs:  # the first finishes (and renames) while the second is still writing
            run.stdin.close()
            assert run.wait(timeout=120) == 0, run.stderr.read().decode()
    finally:
        for run in runs:
            run.kill()
            run.wait()
    for run in runs:
        assert_quiet_stderr(run.stderr.read().decode())
    # the file of the last run to finish, whole: its header and rows are its own
    expected = tmp_path / "expected.npy"
    source = tmp_path / "second.txt"
    source.write_text("".join(line + "\n" for line in second))
    assert nmt_main([*args[:4], str(source), "--output", str(expected), "--device", "cpu", "--batch-tokens", "2"]) == 0
    np.testing.assert_array_equal(np.load(out), np.load(expected))
    assert leftovers(tmp_path) == []


# -- 5. every command, every file it writes: the one output check and the one atomic writer -------------------------

TRAINING_COMMANDS = {"fit", "validate", "test", "predict"}
# Every command of `nmt` -> {output option: (suffix, argv writing OUT)}. The training commands write a run
# directory (checkpoints through nmt.training.resume.write_atomically, the preprocessing cache through
# nmt.data.datamodule._write_atomically: both nmt.textio.replacing), named by the config, not by a file option.
OUTPUTS = {
    "translate": {"--output": (".txt", lambda o, f: ["translate", "--checkpoint", f["CKPT"], "--input", f["TEXT"],
                                                     "--output", o, *SHORT_SEARCH, "--no-progress"])},
    "evaluate": {"--output": (".txt", lambda o, f: ["evaluate", "--checkpoint", f["CKPT"], "--src", f["TEXT"],
                                                    "--ref", f["TEXT"], "--output", o, *SHORT_SEARCH])},
    "score": {"--output": (".txt", lambda o, f: ["score", "--checkpoint", f["CKPT"], "--src", f["TEXT"], "--tgt",
                                                 f["TEXT"], "--output", o, *OPTIONS["score"]])},
    "embed": {
        "--output": (".npy", lambda o, f: ["embed", "--checkpoint", f["CKPT"], "--input", f["TEXT"], "--output", o]),
        "--plot": (".png", lambda o, f: ["embed", "--checkpoint", f["CKPT"], "--input", f["TEXT"], "--output",
                                         f["NPY"], "--plot", o]),
    },
    "plot-attention": {"--output": (".png", lambda o, f: ["plot-attention", "--checkpoint", f["CKPT"], "--src",
                                                          "a man", "--output", o, "--dpi", "20"])},
    "plot-curves": {"--output": (".png", lambda o, f: ["plot-curves", f["CSV"], "--output", o, "--dpi", "20"])},
    "export": {"--output": (".ckpt", lambda o, f: ["export", "--checkpoint", f["CKPT"], "--output", o])},
    "average": {"--output": (".ckpt", lambda o, f: ["average", f["CKPT"], f["CKPT"], "--output", o])},
    "shortlist": {"--output": (".tsv", lambda o, f: ["shortlist", "--checkpoint", f["CKPT"], "--source", f["TEXT"],
                                                     "--target", f["TEXT"], "--output", o])},
    "serve": {},  # answers over HTTP; writes no file
    **{command: {} for command in TRAINING_COMMANDS},
}  # fmt: skip
OUTPUT_CASES = [(command, option) for command, outputs in OUTPUTS.items() for option in outputs]


def output_argv(command: str, option: str, out: Path, directory: Path, checkpoint: Path) -> list[str]:
    files = companions(directory, checkpoint)
    (directory / "metrics.csv").write_text(METRICS)
    files |= {"CSV": str(directory / "metrics.csv"), "NPY": str(directory / "vectors.npy")}
    return OUTPUTS[command][option][1](str(out), files)


def test_every_command_and_every_file_it_writes_is_listed():
    """A new command, or a new option naming a file, fails here until its rows are in OUTPUTS (and it is then
    tried below against devices, full disks and links to stdout)."""
    from importlib import import_module

    from nmt.cli import LIGHTNING_COMMANDS, TOOLS

    assert set(OUTPUTS) == set(TOOLS) | set(LIGHTNING_COMMANDS)
    for command, module in TOOLS.items():
        parser = import_module(module).build_parser()
        writes = {o for a in parser._actions for o in a.option_strings if a.dest in ("output", "plot")}
        assert writes == set(OUTPUTS[command]), command


@pytest.mark.parametrize(("command", "option"), OUTPUT_CASES)
def test_every_output_written_into_a_device_leaves_the_device(command, option, checkpoint, tmp_path, capsys):
    null = make_device(tmp_path / f"null{OUTPUTS[command][option][0]}", minor=3)
    status = nmt_main(output_argv(command, option, null, tmp_path, checkpoint))
    err = capsys.readouterr().err
    assert status == 0, err
    assert_quiet_stderr(err)
    assert stat.S_ISCHR(os.lstat(null).st_mode), "the device was replaced by a regular file"
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize(("command", "option"), OUTPUT_CASES)
def test_every_output_on_a_full_device_is_one_line(command, option, checkpoint, tmp_path, capsys):
    """One line of error (after what the command said of the outputs it did write: embed's vectors before its map)."""
    full = make_device(tmp_path / f"full{OUTPUTS[command][option][0]}", minor=7)
    status = nmt_main(output_argv(command, option, full, tmp_path, checkpoint))
    err = capsys.readouterr().err
    error = err.strip().splitlines()[-1] + "\n"
    assert f"nmt {command}: error:" not in err.removesuffix(error), err
    assert_one_line_error(status, error, command, str(full), "No space left on device")
    assert_quiet_stderr(err)
    assert stat.S_ISCHR(os.lstat(full).st_mode)
    assert leftovers(tmp_path) == []


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")
@pytest.mark.parametrize(("command", "option"), OUTPUT_CASES)
def test_every_output_through_a_link_to_stdout_keeps_the_link(command, option, checkpoint, tmp_path, capfdbinary):
    link = tmp_path / f"stdout{OUTPUTS[command][option][0]}"
    link.symlink_to("/proc/self/fd/1")
    status = nmt_main(output_argv(command, option, link, tmp_path, checkpoint))
    out, err = capfdbinary.readouterr()
    assert status == 0, err.decode()
    assert out, "nothing reached standard output"
    assert link.is_symlink(), "the link was replaced by a regular file"
    assert leftovers(tmp_path) == []
