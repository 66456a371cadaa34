"""Errors the user can fix by changing their input, as opposed to bugs in `nmt`."""

from __future__ import annotations

import os


class InputError(Exception):
    """A bad input file (or data source), located precisely enough to fix it.

    `str(error)` is one line, ``PATH:LINE: message`` (``PATH: message`` when no line applies), the format
    compilers use, so editors and terminals can jump to the spot. The CLI prints it and exits with status 2.

    Attributes:
        path: the file (or data source name) at fault.
        line: 1-based line number, or None when the problem is not on one line (e.g. an empty file).
        message: what is wrong, without the location.
    """

    def __init__(self, *, path: str | os.PathLike[str], message: str, line: int | None = None) -> None:
        self.path = os.fspath(path)
        self.line = line
        self.message = message
        super().__init__(str(self))

    def __str__(self) -> str:
        where = self.path if self.line is None else f"{self.path}:{self.line}"
        return f"{where}: {self.message}"

    def __reduce__(self) -> tuple[object, ...]:
        # Keyword-only __init__ breaks the default Exception pickling, which a DataLoader worker or a
        # `datasets` subprocess needs to send the error back to the parent.
        return (_rebuild_input_error, (self.path, self.message, self.line))


def find_input_error(error: BaseException) -> InputError | None:
    """The InputError somewhere in `error`'s chain of causes, if any (libraries such as `datasets` wrap what
    a generator raised; the user needs our message, not the wrapper's)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, InputError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _rebuild_input_error(path: str, message: str, line: int | None) -> InputError:
    return InputError(path=path, message=message, line=line)


class TrainingDiverged(Exception):
    """The training loss became NaN or infinite and the module's ``nan_policy`` says stop (or too many steps in a
    row were skipped). The CLI prints it as one line; the last checkpoint written is the last good one."""
