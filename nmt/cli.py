"""The ``nmt`` command.

Training, validation and testing are Lightning's own CLI (``nmt fit|validate|test --config …``): every
Trainer, model and data option comes from the YAML config or the command line, and ``--print_config``
shows the resolved configuration. The inference commands (translate, evaluate, score, …) are small
jsonargparse parsers of their own modules.
"""

from __future__ import annotations

import ast
import difflib
import gc
import importlib
import importlib.metadata
import importlib.util
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from nmt.errors import InputError, TrainingDiverged
from nmt.textio import utf8_stdout
from nmt.training import LIGHTNING_COMMANDS

# command -> module with a ``main(argv) -> int``
TOOLS = {
    "translate": "nmt.commands.translate",
    "evaluate": "nmt.commands.evaluate",
    "score": "nmt.commands.score",
    "embed": "nmt.commands.embed",
    "plot-attention": "nmt.commands.plot_attention",
    "plot-curves": "nmt.commands.plot_curves",
    "serve": "nmt.commands.serve",
    "export": "nmt.commands.export",
    "average": "nmt.commands.average",
    "shortlist": "nmt.commands.shortlist",
}


TRAINING_COMMANDS = {  # what `nmt --help` says of each (predict is Lightning's, not one nmt documents)
    "fit": "train a model, every option from a YAML config: nmt fit --config configs/tiny.yaml",
    "validate": "loss and BLEU of a checkpoint (--ckpt_path) on the config's validation set",
    "test": "loss and BLEU of a checkpoint (--ckpt_path) on the config's test set",
}


def usage() -> str:
    """`nmt --help`: one line per command saying what it does."""
    width = max(map(len, [*TRAINING_COMMANDS, *TOOLS])) + 2
    lines = [
        "usage: nmt COMMAND [options]   (nmt COMMAND --help: its options; nmt --version: the version)",
        "",
        "training (Lightning's CLI, options from a YAML config and the command line):",
        *(f"  {name:<{width}}{what}" for name, what in TRAINING_COMMANDS.items()),
        "",
        "translation and analysis:",
        *(f"  {name:<{width}}{command_summary(module)}" for name, module in TOOLS.items()),
    ]
    return "\n".join(lines) + "\n"


def command_summary(module: str) -> str:
    """The first line of a command module's docstring, without its "``nmt NAME``: " and markup, read from the
    source without importing the module (importing a command imports torch: seconds)."""
    spec = importlib.util.find_spec(module)
    with open(spec.origin, encoding="utf-8") as f:
        docstring = ast.get_docstring(ast.parse(f.read())) or ""
    first = plain_text(docstring.partition("\n")[0])
    return re.sub(r"^nmt [\w-]+:\s*", "", first)


def plain_text(text: str) -> str:
    """`text` without reStructuredText's literal and reference quotes (``nmt fit``, `nmt fit`), as a terminal
    shows it."""
    return _QUOTED.sub(r"\1", text)


_QUOTED = re.compile(r"`+([^`]*)`+")


def version() -> str:
    try:
        return importlib.metadata.version("nmt")
    except importlib.metadata.PackageNotFoundError:  # imported from a source tree that was never installed
        return "unknown (not installed: pip install -e .)"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        (sys.stdout if argv else sys.stderr).write(usage())
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        sys.stdout.write(f"nmt {version()}\n")
        return 0
    command = argv[0]
    if command in TOOLS:
        before = set(threading.enumerate())
        status = _reported(command, lambda: _run_tool(command, argv[1:]))
        _let_helpers_finish(set(threading.enumerate()) - before)
        return status
    if command in LIGHTNING_COMMANDS:
        return _reported(command, lambda: _train(command, argv))
    _say(f"nmt: error: {_unknown_command(command)}")
    return 2


def _unknown_command(command: str) -> str:
    """What is wrong with a first argument that is no command, and the nearest command."""
    if command.startswith("-"):
        return f"unknown option {command!r}; give a command first (nmt --help lists them)"
    near = difflib.get_close_matches(command, [*TRAINING_COMMANDS, *TOOLS], n=1, cutoff=0.5)
    hint = f"did you mean {near[0]}? " if near else ""
    return f"unknown command {command!r}; {hint}(nmt --help lists them)"


def _run_tool(command: str, args: list[str]) -> int:
    with _sigterm_raises(), utf8_stdout():
        status = importlib.import_module(TOOLS[command]).main(args) or 0
        sys.stdout.flush()  # here, so that a full disk or a closed stdout is reported like any error
    return status


def _train(command: str, argv: list[str]) -> int:
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from nmt.training import cli  # Lightning and torch: imported for the training commands only

    try:
        cli.train_cli(argv)
    except SIGTERMException:
        # Lightning stops at the next batch boundary (ResumeCheckpoint writes last.ckpt there) and raises a
        # SystemExit with status 0: a run cut short must not look finished to `nmt fit … && next step`.
        raise _Terminated from None
    except FileNotFoundError as e:  # e.g. a --ckpt_path that does not exist: Lightning raises it plainly
        raise InputError(path=e.filename or command, message=str(e.strerror or e)) from None
    return 0


def _reported(command: str, run: Callable[[], int]) -> int:
    """run(), its errors told in one line on stderr; the exit status."""
    try:
        return run()
    except BrokenPipeError:  # the reader of our output went away (`| head`): stop quietly, like `cat`
        return 128 + signal.SIGPIPE  # (what was left for stdout went to /dev/null: see utf8_stdout)
    except InputError as e:
        _say(f"nmt {command}: error: {e}")
        return 2
    except TrainingDiverged as e:
        _say(f"nmt {command}: error: {e}")
        return 1
    except KeyboardInterrupt:
        _say(f"nmt {command}: interrupted")
        return 130
    except _Terminated:
        _say(f"nmt {command}: terminated" + (" (resume with --ckpt_path last)" if command == "fit" else ""))
        return 128 + signal.SIGTERM


def _let_helpers_finish(threads: set[threading.Thread], timeout: float = 1.0) -> None:
    """Give the helper threads a command started (the readers of translate and score) a moment to end before
    the interpreter does: one stopped at exit inside C++ (SentencePiece, torch) aborts the process ("terminate
    called without an active exception", exit 134). Called once the command's error, if any, is gone, so that
    an abandoned pipeline's generators have been closed and have told their threads to stop. A thread still
    blocked reading its input after `timeout` is left to the interpreter, which abandons it cleanly."""
    helpers = [t for t in threads if t.name.startswith("nmt-") and t.is_alive()]
    if not helpers:
        return
    gc.collect()  # closes generators kept alive only by reference cycles
    deadline = time.monotonic() + timeout
    try:
        for thread in helpers:
            thread.join(max(0.0, deadline - time.monotonic()))
    except KeyboardInterrupt:  # a second Ctrl-C: the user does not want to wait
        pass


def _say(message: str) -> None:
    """One line on stderr, unless stderr itself is gone (a closed pipe): then there is no one to tell."""
    if sys.stderr is None:  # closed when Python started (print would write to stdout)
        return
    try:
        print(message, file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass


class _Terminated(BaseException):
    """SIGTERM, raised like KeyboardInterrupt so that partial outputs are removed on the way out."""


@contextmanager
def _sigterm_raises() -> Iterator[None]:
    """While a tool runs, SIGTERM (kill, a batch system's time limit) unwinds the stack like Ctrl-C instead of
    ending the process on the spot, so no temporary output file is left behind. (Lightning handles its own.)"""
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return

    def terminate(signum: int, frame: object) -> None:
        raise _Terminated

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
