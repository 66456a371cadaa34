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
import logging
import os
import re
import signal
import stat
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from nmt.errors import InputError, TrainingDiverged
from nmt.textio import utf8_stdout

if TYPE_CHECKING:
    from jsonargparse import Namespace

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
    "shortlist": "nmt.commands.shortlist",
}
LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")
TRAINING_COMMANDS = {  # what `nmt --help` says of each (predict is Lightning's, not one nmt documents)
    "fit": "train a model, every option from a YAML config: nmt fit --config configs/tiny.yaml",
    "validate": "loss and BLEU of a checkpoint (--ckpt_path) on the config's validation set",
    "test": "loss and BLEU of a checkpoint (--ckpt_path) on the config's test set",
}
# The modules whose classes a training config may name (class_path, and any other import path jsonargparse
# resolves): nmt's own and the libraries it builds on. Checked before anything is imported, since importing a
# module runs its code. NMT_ALLOW_ANY_CLASS_PATH=1 lifts the restriction (for configs naming your own classes).
ALLOWED_IMPORT_PREFIXES = ("nmt", "lightning", "torch")
ALLOW_ANY_CLASS_PATH_ENV = "NMT_ALLOW_ANY_CLASS_PATH"
_DENIED_IMPORT = re.compile(r"Importing '([\w.]+)' is not allowed")
_PARSER_KEY = re.compile(r'Parser key "([^"]+)"')
_CKPT_PATH_KEYWORDS = ("last", "best", "hpc")  # --ckpt_path values Lightning resolves itself


class _NoAdvertising(logging.Filter):
    """Drops Lightning's "💡 Tip: … try installing litlogger / litmodels" lines: advertising for a cloud service,
    printed on every run, that our users' terminals (and logs) do not need."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip:")


def train_cli(args: list[str], *, run: bool = True):
    """Lightning's CLI over TranslationModule + TranslationDataModule. args: ["fit", "--config", …] (or,
    with run=False, the options alone: the model, data and trainer are built but nothing is run)."""
    tips = logging.getLogger("lightning.pytorch.utilities.rank_zero")  # where rank_zero_info logs
    if not any(isinstance(f, _NoAdvertising) for f in tips.filters):
        tips.addFilter(_NoAdvertising())
    from jsonargparse import Namespace
    from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

    from nmt.checkpoint import check_training_checkpoint, read_training_checkpoint
    from nmt.data.datamodule import TranslationDataModule
    from nmt.module import TranslationModule
    from nmt.resume import install_atomic_checkpoint_io, newest_resume_checkpoint, use_default_checkpoint_dir

    class NMTArgumentParser(LightningArgumentParser):
        def error(self, message: str, ex: Exception | None = None):
            # An import path outside ALLOWED_IMPORT_PREFIXES: one line naming it, not the usage and every type tried.
            denied = _DENIED_IMPORT.search(message)
            if denied and self.exit_on_error:
                key = _PARSER_KEY.search(message)
                raise InputError(
                    path="configuration",
                    message=(f"{key.group(1)}: " if key else "")
                    + f"class_path {denied.group(1)!r} is outside the modules a config may name "
                    f"({', '.join(ALLOWED_IMPORT_PREFIXES)}); nothing of it was imported "
                    f"({ALLOW_ANY_CLASS_PATH_ENV}=1 allows any module)",
                )
            super().error(message, ex)

        def validate(self, cfg, *args, **kwargs) -> None:
            # Loggers given no save_dir get trainer.default_root_dir (see NMTLightningCLI.instantiate_trainer): set
            # here, before jsonargparse checks the save_dir that CSVLogger and TensorBoardLogger require.
            for section in (cfg, *(cfg.get(name) for name in LIGHTNING_COMMANDS)):
                if isinstance(section, Namespace) and isinstance(section.get("trainer"), Namespace):
                    _default_save_dirs(section.trainer)
            super().validate(cfg, *args, **kwargs)

    class NMTLightningCLI(LightningCLI):
        _checkpoint = None  # the --ckpt_path file, as read_training_checkpoint found it

        def parse_arguments(self, parser, args) -> None:
            super().parse_arguments(parser, args)
            # Read --ckpt_path the safe way (a regular file, plain data only: one line for each problem) before
            # Lightning reads it, which it does next (_parse_ckpt_path), then again when the run starts.
            subcommand = self.config.get("subcommand")
            path = self.config[subcommand].get("ckpt_path") if subcommand else None
            if _is_checkpoint_file(path):
                self._checkpoint = read_training_checkpoint(path)

        def _parse_ckpt_path(self) -> None:
            # Lightning loads the checkpoint here for hyper-parameters saved in it; nmt's hold none.
            if self._checkpoint is None or self._checkpoint.has_hyper_parameters:
                super()._parse_ckpt_path()

        def _prepare_subcommand_kwargs(self, subcommand: str) -> dict:
            # The checkpoint the run will load (`last`, `best` resolved), compared with the network the config builds.
            kwargs = super()._prepare_subcommand_kwargs(subcommand)
            path = kwargs.get("ckpt_path")
            if path in ("last", "best"):
                path = self._resolved_checkpoint(subcommand, path)
            if _is_checkpoint_file(path):
                checkpoint = self._checkpoint
                if checkpoint is None or checkpoint.path != os.fspath(path):
                    checkpoint = read_training_checkpoint(path)
                tokenizer = self.datamodule.tokenizer_config
                check_training_checkpoint(
                    checkpoint,
                    network=self.model.network_config,
                    vocab_sizes=(self.model.src_vocab_size, self.model.tgt_vocab_size),
                    vocab_option="data.tokenizer."
                    + ("model" if tokenizer.model else "src_model/tgt_model" if tokenizer.src_model else "vocab_size"),
                    state_dict=self.model.state_dict(),
                    resume=subcommand == "fit",
                )
                if "weights_only" in kwargs and kwargs["weights_only"] is None:
                    kwargs["weights_only"] = True  # what torch.load defaults to, made explicit
            return kwargs

        def _resolved_checkpoint(self, subcommand: str, keyword: str) -> str | None:
            """The file Lightning will take for `--ckpt_path last|best` (None: no `last` yet, or not resolvable)."""
            import warnings

            from lightning.pytorch.trainer.states import TrainerFn

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "no last checkpoint": Lightning says it itself, once
                try:
                    return self.trainer._checkpoint_connector._parse_ckpt_path(
                        TrainerFn(subcommand), keyword, model_provided=True, model_connected=False
                    )
                except ValueError:  # `best`: the best checkpoint of a fit run in this process, and none has run
                    raise InputError(
                        path="--ckpt_path",
                        message=f"{keyword} is the best checkpoint of a fit earlier in the same process; from the "
                        "command line, give its file (e.g. runs/NAME/checkpoints/best.ckpt)",
                    ) from None
                except (AttributeError, TypeError, OSError):  # Lightning's internals moved: its own checks remain
                    return None

        def add_arguments_to_parser(self, parser) -> None:
            # The vocabulary sizes are stated once, by the data (its SentencePiece models).
            parser.link_arguments("data.src_vocab_size", "model.src_vocab_size", apply_on="instantiate")
            parser.link_arguments("data.tgt_vocab_size", "model.tgt_vocab_size", apply_on="instantiate")

        def instantiate_classes(self) -> None:
            try:
                super().instantiate_classes()
            except ValueError as e:  # a config class refusing its values (Corpus, TokenizerConfig, …): one line
                raise InputError(path="configuration", message=str(e).strip().splitlines()[0]) from None

        def instantiate_trainer(self, **kwargs):
            from lightning.pytorch.callbacks import ModelCheckpoint

            trainer = super().instantiate_trainer(**kwargs)
            install_atomic_checkpoint_io(trainer)  # a kill while a checkpoint is written leaves the old one
            # One setting decides where a run writes, trainer.default_root_dir (ROOT), as in Lightning for a trainer
            # without a logger: every ModelCheckpoint given no dirpath writes to ROOT/checkpoints (not Lightning's
            # <save_dir>/<name>/<version>/checkpoints), where `--ckpt_path last` then looks for last.ckpt, and every
            # logger given no save_dir logs under ROOT (NMTArgumentParser.validate): the configs' CSVLogger, named
            # "logs", in ROOT/logs/version_N. A dirpath or save_dir that is given is kept.
            for callback in trainer.checkpoint_callbacks:
                if isinstance(callback, ModelCheckpoint):
                    use_default_checkpoint_dir(callback, trainer)
            return trainer

        def before_fit(self) -> None:
            # `--ckpt_path last` also considers the checkpoint Lightning writes when SLURM preempts the job,
            # so a requeued job resumes from whichever is newer.
            config = self.config_init[self.subcommand]
            if config.get("ckpt_path") == "last" and (newest := newest_resume_checkpoint(self.trainer)):
                config["ckpt_path"] = newest

    _check_config_files(sys.argv[1:] if args is None else args if isinstance(args, (list, tuple)) else [])
    with _import_paths_restricted():
        return NMTLightningCLI(
            TranslationModule,
            TranslationDataModule,
            # From the shell, args is sys.argv[1:]: let Lightning read it there, or it warns about both on every run.
            args=None if args == sys.argv[1:] else args,
            run=run,
            # Our token-bucket batch sampler shards across ranks itself.
            trainer_defaults={"use_distributed_sampler": False},
            save_config_kwargs={"overwrite": True},
            parser_kwargs={"prog": "nmt"},
            parser_class=NMTArgumentParser,
        )


def _default_save_dirs(trainer: Namespace) -> None:
    """In a parsed trainer config, set the save_dir of every logger given none (None, or for W&B its "." with
    no `dir` either) to trainer.default_root_dir."""
    from jsonargparse import Namespace

    root = os.fspath(trainer.get("default_root_dir") or os.getcwd())  # Lightning's default: the working directory
    loggers = trainer.get("logger")
    for logger in loggers if isinstance(loggers, list) else [loggers]:
        if isinstance(logger, Namespace) and isinstance(logger.get("class_path"), str):
            _default_save_dir(logger, root)  # (True/False/None: Lightning's default logger, under default_root_dir)


def _default_save_dir(logger: Namespace, root: str) -> None:
    from jsonargparse import Namespace
    from lightning.pytorch.loggers import WandbLogger

    init_args = logger.get("init_args")
    if not isinstance(init_args, Namespace) or "save_dir" not in init_args:
        return  # a logger class without a save_dir
    module, _, name = logger.class_path.rpartition(".")
    try:  # imported already, when the config was parsed
        wandb = issubclass(getattr(importlib.import_module(module), name), WandbLogger)
    except (ImportError, AttributeError, TypeError):
        wandb = False
    save_dir = init_args.get("save_dir")
    if save_dir is None or (wandb and save_dir == "." and init_args.get("dir") is None):
        init_args.save_dir = root


def _is_checkpoint_file(path: object) -> bool:
    """Whether a --ckpt_path value names a file (not a keyword Lightning resolves, nor a model registry)."""
    if not isinstance(path, (str, os.PathLike)):
        return False
    return path not in _CKPT_PATH_KEYWORDS and not os.fspath(path).startswith("registry")


@contextmanager
def _import_paths_restricted() -> Iterator[None]:
    """While the training CLI parses and builds its classes, jsonargparse imports only from ALLOWED_IMPORT_PREFIXES:
    any other import path a config or the command line gives is refused before its module is imported (unless
    $NMT_ALLOW_ANY_CLASS_PATH is 1)."""
    if os.environ.get(ALLOW_ANY_CLASS_PATH_ENV, "").lower() in ("1", "true", "yes"):
        yield
        return
    from jsonargparse import _common, set_parsing_settings

    keys = ("import_path_verdicts", "import_paths_enforced")
    saved = {key: _common.parsing_settings[key] for key in keys}  # process-wide settings: restored afterwards
    set_parsing_settings(import_path_denylist=["*"], import_path_allowlist=list(ALLOWED_IMPORT_PREFIXES))
    try:
        yield
    finally:
        _common.parsing_settings.update(saved)


def _check_config_files(args: list[str]) -> None:
    """The files given to --config, checked before jsonargparse reads them, so that a file that is not one or
    not valid YAML is one line naming it (and the line), not a traceback or jsonargparse's "<unicode string>"."""
    import yaml

    values = iter(args)
    for arg in values:
        if arg == "--":
            break
        if arg in ("--config", "-c"):
            path = next(values, None)
        elif arg.startswith("--config="):
            path = arg.partition("=")[2]
        else:
            continue
        if path is None:
            continue
        try:
            mode = os.stat(path).st_mode
        except OSError:
            if path.endswith((".yaml", ".yml", ".json")):
                raise InputError(path=path, message="config file not found") from None
            continue  # jsonargparse reads a --config value that is no file as YAML text
        if stat.S_ISDIR(mode):
            raise InputError(path=path, message="is a directory, not a config file")
        if not stat.S_ISREG(mode):
            raise InputError(path=path, message="not a regular file; a config is a YAML file")
        with open(path, "rb") as f:
            data = f.read()
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            line = data.count(b"\n", 0, e.start) + 1
            raise InputError(path=path, line=line, message=f"not valid UTF-8 (byte 0x{data[e.start]:02x})") from None
        try:
            options = yaml.safe_load(text)
        except yaml.MarkedYAMLError as e:
            mark = e.problem_mark or e.context_mark
            where = f"column {mark.column + 1}" if mark else ""
            if e.context:
                start = f" from line {e.context_mark.line + 1}" if e.context_mark else ""
                where += f"; {e.context}{start}"
            raise InputError(
                path=path,
                line=mark.line + 1 if mark else None,
                message=f"not valid YAML: {e.problem}" + (f" ({where.removeprefix('; ')})" if where else ""),
            ) from None
        except yaml.YAMLError as e:
            raise InputError(path=path, message=f"not valid YAML: {str(e).splitlines()[0]}") from None
        if not isinstance(options, dict):
            what = "nothing" if options is None else f"a {type(options).__name__}"
            raise InputError(path=path, message=f"holds {what}, not a mapping of options (trainer:, model:, data:, …)")


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

    try:
        train_cli(argv)
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
