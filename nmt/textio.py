"""Reading and writing the line-oriented text files every command consumes and produces.

Reading checks each line where it is read and raises ``InputError(path=path, message=reason, line=line)``: invalid UTF-8
(unless errors="replace"), NUL bytes, a truncated or corrupt gzip stream. A UTF-8 BOM on the first line is
dropped; the line end ("\\n" or "\\r\\n") is removed and reported, so a writer can keep the input's
convention. ``-`` means stdin/stdout.

Writing to a file goes to a temporary name beside it (unique to the run) and is renamed to the final name only
when the command finishes: an interrupted run never leaves a short file under the final name. An output is checked
before the work starts (``check_output``): not a directory, its directory writable, and not one of the command's
inputs under any name. Standard output, devices and FIFOs are written into, never renamed over. A failed write
(a full disk, a read-only filesystem) is an ``InputError`` naming the output; standard output is UTF-8 whatever
the locale (``utf8_stdout``).
"""

from __future__ import annotations

import gzip
import io
import os
import shutil
import stat
import sys
import tempfile
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO

from nmt.errors import InputError

BOM = "\ufeff"
STDOUT = "stdout"  # how messages name standard output ('-')


def stdin_binary() -> IO[bytes]:
    """A reader of its own on standard input (the descriptor stays open when it is closed).

    Not ``sys.stdin.buffer``: a reader thread blocked on that one holds its lock, and an interpreter exiting
    on Ctrl-C or SIGTERM then aborts ("could not acquire lock for <stdin> at interpreter shutdown").
    """
    try:
        return open(sys.stdin.fileno(), "rb", closefd=False)
    except (AttributeError, OSError, ValueError):  # a replaced sys.stdin without a descriptor (tests)
        return sys.stdin.buffer


def read_binary_lines(path: str | os.PathLike[str]) -> Iterator[bytes]:
    """The one line reader: the lines of a plain or gzip'd file ('-': stdin) as bytes, line ends included,
    exactly as stored, each yielded as soon as it is read (a pipe that stays open works). A file that cannot be
    opened, or corrupt or truncated gzip data, is an `InputError` naming the file (and the line). `read_lines`
    decodes them; the corpus and the Moses parsers check them their own way."""
    path = os.fspath(path)
    stream = _open_binary(path)
    number = 0
    try:
        while True:
            try:
                raw = stream.readline()
            except (OSError, EOFError, zlib.error) as error:  # gzip.BadGzipFile is an OSError
                raise InputError(
                    path=path, line=number + 1, message=f"corrupt or truncated gzip data ({error})"
                ) from None
            if not raw:
                return
            number += 1
            yield raw
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()  # our own stdin reader leaves the descriptor open


def read_binary(path: str | os.PathLike[str]) -> bytes:
    """The whole of a plain or gzip'd file ('-': stdin) as bytes in one read, for a large file parsed column-wise
    (a shortlist table) rather than line by line; the errors of `read_binary_lines`, without a line number."""
    path = os.fspath(path)
    stream = _open_binary(path)
    try:
        return stream.read()
    except (OSError, EOFError, zlib.error) as error:
        raise InputError(path=path, message=f"corrupt or truncated gzip data ({error})") from None
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()


def check_input(path: str | os.PathLike[str] | None) -> None:
    """Refuse, before any work is done (a model loaded), an input file that cannot be read: one that does not
    exist or cannot be looked at, and a directory. '-' (standard input) and None (not given) pass."""
    if path is None or os.fspath(path) == "-":
        return
    path = os.fspath(path)
    try:
        mode = os.stat(path).st_mode
    except OSError as error:
        raise InputError(path=path, message=f"cannot open: {error.strerror or error}") from None
    if stat.S_ISDIR(mode):
        raise InputError(path=path, message="is a directory; give a file")


def announce_terminal_input(path: str, prog: str) -> None:
    """When `path` is standard input and that is a terminal, say so on stderr: a command waiting for typed lines
    must not look hung. Said only then: a pipe or a file needs no words."""
    if path != "-" or sys.stdin is None:
        return
    try:
        typed = sys.stdin.isatty()
    except (AttributeError, OSError, ValueError):  # a replaced or closed sys.stdin
        return
    if typed:
        print(f"{prog}: reading standard input; Ctrl-D to end", file=sys.stderr, flush=True)


def _open_binary(path: str) -> IO[bytes]:
    if path == "-":
        return stdin_binary()
    check_input(path)
    try:
        return gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")
    except OSError as error:
        raise InputError(path=path, message=f"cannot open: {error.strerror or error}") from None


def read_lines(path: str, *, errors: str = "strict") -> Iterator[tuple[str, str]]:
    """Yield (text, line_end) for every line of a plain or gzip'd UTF-8 file, or stdin for '-'.

    line_end is "\\n", "\\r\\n" or "" (a last line without newline). Streams: a line is yielded as soon as
    it has been read, so this works on a pipe that stays open.
    """
    return decoded_lines(read_binary_lines(path), path, errors=errors)


def decoded_lines(raw_lines: Iterable[bytes], path: str, *, errors: str = "strict") -> Iterator[tuple[str, str]]:
    """`read_lines` of lines already read as bytes (from `path`, which errors name): the same checks and results."""
    for number, raw in enumerate(raw_lines, start=1):
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
                return
        if text.endswith("\r\n"):
            yield text[:-2], "\r\n"
        elif text.endswith("\n"):
            yield text[:-1], "\n"
        else:
            yield text, ""


def single_line(text: str) -> str:
    """`text` with any line break made a space: output line i must stay the line of input line i, whatever a
    model (a SentencePiece model with byte fallback can spell "\\n") or a copied field holds."""
    return text.replace("\r", " ").replace("\n", " ") if "\n" in text or "\r" in text else text


class _NamedFile(io.FileIO):
    """A descriptor written to by the text and gzip layers above it, whose failed writes (a full disk, a
    read-only filesystem, an I/O error) raise one InputError naming the output instead of an OSError from deep
    inside those layers. A closed pipe stays BrokenPipeError: the reader went away, which the CLI ends quietly."""

    def __init__(self, fd: int, name: str, *, closefd: bool = True) -> None:
        super().__init__(fd, "wb", closefd=closefd)
        self.display = name
        self.refusal: str | None = None  # when set, every write fails with this message (a closed stdout)

    def write(self, data) -> int | None:
        if self.refusal is not None:
            raise InputError(path=self.display, message=self.refusal)
        try:
            return super().write(data)
        except BrokenPipeError:
            raise
        except OSError as error:
            raise InputError(path=self.display, message=f"cannot write: {error.strerror or error}") from None


@contextmanager
def _writer(fd: int, name: str, *, binary: bool, gz: bool) -> Iterator[IO]:
    """A buffered stream on `fd` (closed at the end): bytes, or UTF-8 text; gzip'd when gz."""
    buffered = io.BufferedWriter(_NamedFile(fd, name))
    layer: IO[bytes] = gzip.GzipFile(fileobj=buffered, mode="wb") if gz else buffered  # type: ignore[assignment]
    try:
        if binary:
            yield layer
        else:
            text = io.TextIOWrapper(layer, encoding="utf-8", newline="")
            yield text
            text.flush()
            text.detach()  # leaves `layer` open: the gzip trailer is written by close() below
        layer.close()
        buffered.close()
    except BaseException:
        for stream in (layer, buffered):  # what is left is dropped: the error raised says why
            with suppress(Exception):
                stream.close()
        raise


_stdout: _NamedFile | None = None  # the descriptor under sys.stdout while `utf8_stdout` is in force


@contextmanager
def utf8_stdout() -> Iterator[None]:
    """While a command runs, sys.stdout writes UTF-8 whatever the locale or PYTHONIOENCODING says, and a failed
    write (``> /dev/full``) is one InputError naming stdout. A closed descriptor 1 (``>&-``) is an error when it
    is written to (``check_output('-')`` finds it before the work starts) and is held by /dev/null meanwhile, so
    that no file we open becomes "standard output". A sys.stdout that is not the process's own (tests capture
    it) is left alone."""
    global _stdout
    original = sys.stdout
    if original is not sys.__stdout__ or _stdout is not None:
        yield
        return
    if original is None:  # closed when Python started
        fd = os.open(os.devnull, os.O_WRONLY)
        try:
            os.fstat(1)
        except OSError:  # free: hold it
            os.dup2(fd, 1)
        raw = _NamedFile(fd, STDOUT)
        raw.refusal = "cannot write: standard output is closed"
    else:
        try:
            original.flush()
            raw = _NamedFile(original.fileno(), STDOUT, closefd=False)
        except (OSError, ValueError):  # no descriptor, or stdout already failing: leave it as it is
            yield
            return
    stream = io.TextIOWrapper(
        io.BufferedWriter(raw), encoding="utf-8", errors="surrogateescape", newline="\n", line_buffering=raw.isatty()
    )
    sys.stdout, _stdout = stream, raw
    try:
        yield
    finally:
        try:
            stream.flush()
        except Exception:  # reported already (or the command failed for another reason): drop the rest
            discard_stdout()
            with suppress(Exception):
                stream.flush()
        sys.stdout, _stdout = original, None
        with suppress(Exception):
            stream.close()


def discard_stdout() -> None:
    """What is left to write to standard output goes to /dev/null: after its reader went away (the Python docs'
    recipe for SIGPIPE: otherwise the flush at exit fails again, "Exception ignored …") or a write failed."""
    if _stdout is None:  # not ours to redirect (tests capture it)
        return
    if _stdout.refusal is None:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, _stdout.fileno())
        os.close(devnull)
    _stdout.refusal = None


def _stdout_closed() -> bool:
    return sys.stdout is None or (_stdout is not None and _stdout.refusal is not None)


def _status_of(stream: object) -> os.stat_result | None:
    """fstat of a stream's descriptor; None when it has none (a stream captured by tests)."""
    try:
        return os.fstat(stream.fileno())  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError):
        return None


def _same(a: os.stat_result | None, b: os.stat_result | None) -> bool:
    return a is not None and b is not None and (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def check_output(path: str | os.PathLike[str] | None, inputs: Iterable[str | os.PathLike[str] | None] = ()) -> str:
    """Refuse, before any work is done, an output that cannot be written: a directory, one in a directory that
    does not exist or cannot be written (read-only filesystem, permissions), a closed standard output, and a
    regular file that is one of `inputs` under any name (the same path, a symbolic or a hard link), which
    writing would destroy. Returns how `atomic_output` writes it: "stdout", "direct" (a device or FIFO, or a
    link to one: written into) or "file" (a temporary file renamed over it)."""
    if path is None:
        return "file"
    path = os.fspath(path)
    if path == "-":
        if _stdout_closed():
            raise InputError(path=STDOUT, message="cannot write: standard output is closed")
        status, name, kind = _status_of(sys.stdout), STDOUT, "stdout"
    else:
        name = path
        try:
            status: os.stat_result | None = os.stat(path)
        except FileNotFoundError:
            status = None
        except OSError as error:
            raise InputError(path=path, message=f"cannot write: {error.strerror or error}") from None
        if status is not None and stat.S_ISDIR(status.st_mode):
            raise InputError(path=path, message="is a directory")
        if status is not None and not _stdout_closed() and _same(status, _status_of(sys.stdout)):
            kind = "stdout"  # /dev/stdout, /proc/self/fd/1, or the file stdout is redirected to
        elif status is not None and not stat.S_ISREG(status.st_mode):
            kind = "direct"
        else:
            kind = "file"
            _check_directory(path)
    if status is not None and stat.S_ISREG(status.st_mode):
        for given in inputs:
            if given is None:
                continue
            given = os.fspath(given)
            try:
                other = _status_of(sys.stdin) if given == "-" else os.stat(given)
            except OSError:
                continue
            if _same(status, other):
                raise InputError(
                    path=name, message=f"is the same file as the input {given}; writing it would destroy that input"
                )
    return kind


def _check_directory(path: str) -> None:
    """The directory of the (real) file `path` exists and a file can be created in it."""
    target = Path(os.path.realpath(path))
    if not target.parent.is_dir():
        raise InputError(path=path, message="output directory does not exist")
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    except OSError as error:
        raise InputError(path=path, message=f"cannot write in {target.parent}: {error.strerror or error}") from None
    os.close(fd)
    os.unlink(probe)


@contextmanager
def atomic_output(
    path: str | os.PathLike[str], *, inputs: Iterable[str | os.PathLike[str] | None] = (), binary: bool = False
) -> Iterator[IO]:
    """A stream for `path` ('-' = stdout): UTF-8 text, or bytes with binary; a '.gz' file is compressed. First
    `check_output(path, inputs)`. Then:

    - a regular file (or a new one) is written under a unique temporary name in its directory and renamed on
      success; on any exception (Ctrl-C included) the temporary file is removed. A symbolic link to a file
      stays: the file it points to is replaced.
    - standard output, and a path that is the same file as it (/dev/stdout), is sys.stdout;
    - a device or a FIFO (or a link to one) is opened and written into: renaming over it would replace the
      device or the pipe with a regular file.

    A failed write is an InputError naming `path`."""
    path = os.fspath(path)
    kind = check_output(path, inputs)
    if kind == "stdout":
        if binary:
            sys.stdout.flush()
            yield sys.stdout.buffer
            sys.stdout.buffer.flush()
        else:
            yield sys.stdout
            sys.stdout.flush()
        return
    gz = path.endswith(".gz")
    if kind == "direct":
        try:
            fd = os.open(path, os.O_WRONLY)
        except OSError as error:
            raise InputError(path=path, message=f"cannot write: {error.strerror or error}") from None
        with _writer(fd, path, binary=binary, gz=gz) as stream:
            yield stream
        return
    with replacing(os.path.realpath(path), name=path) as tmp:
        with _writer(os.open(tmp, os.O_WRONLY), path, binary=binary, gz=gz) as stream:
            yield stream


@contextmanager
def replacing(target: str | os.PathLike[str], *, directory: bool = False, name: str | None = None) -> Iterator[Path]:
    """The one atomic writer (outputs, checkpoints, figures, `.npy` files, the preprocessing cache): a fresh hidden
    path beside `target`, ``.NAME.RANDOM.partial``, unique to this write and never taken for the output, which the
    caller fills (a file, or with directory=True a directory). When the block ends without an error the data
    is flushed to disk (fsync), the path renamed over `target`, and the rename made durable (fsync of the
    directory); on any exception (Ctrl-C included) it is removed. It gets the usual permissions (0666 or 0777
    less the umask), not a temporary file's 0600. Failing to create or rename it is an `InputError` naming
    `name` (default: the target)."""
    target, shown = Path(target), name or os.fspath(target)
    umask = os.umask(0)
    os.umask(umask)
    try:
        if directory:
            tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
        else:
            fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
            os.close(fd)
            tmp = Path(tmp_name)
        os.chmod(tmp, (0o777 if directory else 0o666) & ~umask)
    except OSError as error:
        raise InputError(path=shown, message=f"cannot write in {target.parent}: {error.strerror or error}") from None
    try:
        yield tmp
        for written in tmp.iterdir() if directory else [tmp]:
            if written.is_file():
                _fsync(written, os.O_RDONLY)
        try:
            os.replace(tmp, target)
        except OSError as error:
            raise InputError(path=shown, message=f"cannot write: {error.strerror or error}") from None
    except BaseException:
        if directory:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise
    _fsync(target.parent, os.O_RDONLY)  # the rename itself survives a power loss


def _fsync(path: Path, flags: int) -> None:
    try:
        fd = os.open(path, flags)
    except OSError:  # some filesystems cannot open directories; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def file_signature(path: str | os.PathLike[str]) -> tuple[str, int, int]:
    """(resolved path, size, modification time in ns): what a cache records to notice that a file changed. A
    missing or unreadable file is an `InputError` naming it."""
    try:
        status = os.stat(path)
    except OSError as error:
        raise InputError(path=path, message=f"cannot open: {error.strerror or error}") from error
    return os.fspath(Path(path).resolve()), status.st_size, status.st_mtime_ns
