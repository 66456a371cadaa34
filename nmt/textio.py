"""Reading and writing the line-oriented text files every command consumes and produces.

Reading checks each line where it is read and raises ``InputError(path=path, message=reason, line=line)``: invalid UTF-8
(unless errors="replace"), NUL bytes, a truncated or corrupt gzip stream. A UTF-8 BOM on the first line is
dropped; the line end ("\\n" or "\\r\\n") is removed and reported, so a writer can keep the input's
convention. ``-`` means stdin/stdout.

Writing to a file goes to a temporary name beside it and is renamed to the final name only when the
command finishes: an interrupted run never leaves a short file under the final name.
"""

from __future__ import annotations

import gzip
import io
import os
import sys
import tempfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from nmt.errors import InputError

BOM = "\ufeff"


def stdin_binary() -> IO[bytes]:
    """A reader of its own on standard input (the descriptor stays open when it is closed).

    Not ``sys.stdin.buffer``: a reader thread blocked on that one holds its lock, and an interpreter exiting
    on Ctrl-C or SIGTERM then aborts ("could not acquire lock for <stdin> at interpreter shutdown").
    """
    try:
        return open(sys.stdin.fileno(), "rb", closefd=False)  # noqa: SIM115 (closed by the reader)
    except (AttributeError, OSError, ValueError):  # a replaced sys.stdin without a descriptor (tests)
        return sys.stdin.buffer


def _binary_input(path: str) -> IO[bytes]:
    if path == "-":
        return stdin_binary()
    try:
        raw = open(path, "rb")  # noqa: SIM115 (closed by the caller's generator)
    except FileNotFoundError:
        raise InputError(path=path, message="no such file") from None
    except IsADirectoryError:
        raise InputError(path=path, message="is a directory") from None
    except PermissionError:
        raise InputError(path=path, message="permission denied") from None
    if path.endswith(".gz"):
        return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
    return raw


def read_lines(path: str, *, errors: str = "strict") -> Iterator[tuple[str, str]]:
    """Yield (text, line_end) for every line of a plain or gzip'd UTF-8 file, or stdin for '-'.

    line_end is "\\n", "\\r\\n" or "" (a last line without newline). Streams: a line is yielded as soon as
    it has been read, so this works on a pipe that stays open.
    """
    stream = _binary_input(path)
    number = 0
    try:
        while True:
            try:
                raw = stream.readline()
            except (EOFError, gzip.BadGzipFile, zlib.error, OSError) as e:
                raise InputError(path=path, message=f"corrupt or truncated gzip data ({e})", line=number + 1) from None
            if not raw:
                break
            number += 1
            if b"\x00" in raw:
                raise InputError(path=path, message="NUL byte in line", line=number)
            try:
                text = raw.decode("utf-8", errors=errors)
            except UnicodeDecodeError as e:
                raise InputError(
                    path=path,
                    message=f"invalid UTF-8 at byte {e.start} (use --encoding-errors replace to substitute U+FFFD)",
                    line=number,
                ) from None
            if number == 1 and text.startswith(BOM):
                text = text[1:]
                if not text:  # a file of nothing but a BOM is empty, not one empty line
                    break
            if text.endswith("\r\n"):
                yield text[:-2], "\r\n"
            elif text.endswith("\n"):
                yield text[:-1], "\n"
            else:
                yield text, ""
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()  # our own stdin reader leaves the descriptor open


def single_line(text: str) -> str:
    """`text` with any line break made a space: output line i must stay the line of input line i, whatever a
    model (a SentencePiece model with byte fallback can spell "\\n") or a copied field holds."""
    return text.replace("\r", " ").replace("\n", " ") if "\n" in text or "\r" in text else text


@contextmanager
def atomic_output(path: str) -> Iterator[IO[str]]:
    """A text stream for `path` ('-' = stdout). A file is written under a temporary name in the same
    directory and renamed on success; on any exception (Ctrl-C included) the temporary file is removed."""
    if path == "-":
        yield sys.stdout
        sys.stdout.flush()
        return
    target = Path(path)
    if not target.parent.is_dir():
        raise InputError(path=path, message="output directory does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent or ".")
    try:
        with os.fdopen(fd, "wb") as raw:
            binary: IO[bytes] = gzip.GzipFile(fileobj=raw, mode="wb") if path.endswith(".gz") else raw  # type: ignore[assignment]
            text = io.TextIOWrapper(binary, encoding="utf-8", newline="")
            yield text
            text.flush()
            text.detach()  # leaves `binary` open: the gzip trailer is written by close() below
            if binary is not raw:
                binary.close()
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
