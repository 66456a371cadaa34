"""`nmt fit|validate|test`: Lightning's CLI over `TranslationModule` and `TranslationDataModule`.

Before jsonargparse reads them, the ``--config`` files are checked (one line for bad YAML) and every import path a
config names is held to ``nmt``, ``lightning`` and ``torch``. Loggers without a ``save_dir`` log under the run's
``trainer.default_root_dir`` and checkpoint callbacks without a ``dirpath`` write to ``default_root_dir/checkpoints``;
a ``--ckpt_path`` file is read the safe way (`nmt.training.checkpoint`) and compared with the configured network;
checkpoints are written atomically (`nmt.training.resume`).
"""

from __future__ import annotations

import importlib
import logging
import os
import re
import stat
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import lightning.pytorch
from jsonargparse import ActionConfigFile, Namespace
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_warn

from nmt.data.datamodule import TranslationDataModule
from nmt.errors import InputError
from nmt.training import LIGHTNING_COMMANDS
from nmt.training.checkpoint import check_training_checkpoint, read_training_checkpoint
from nmt.training.module import TranslationModule
from nmt.training.resume import install_atomic_checkpoint_io, newest_resume_checkpoint, use_default_checkpoint_dir

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

    def init_parser(self, **kwargs) -> NMTArgumentParser:
        # Every parser of the CLI (the main one, one per subcommand) is made here: ours, as LightningCLI makes its own.
        kwargs.setdefault("dump_header", [f"lightning.pytorch=={lightning.pytorch.__version__}"])
        parser = NMTArgumentParser(**kwargs)
        described = "Path to a configuration file in json or yaml format."
        parser.add_argument("-c", "--config", action=ActionConfigFile, help=described)
        return parser

    def parse_arguments(self, parser, args) -> None:
        super().parse_arguments(parser, args)
        # Read --ckpt_path the safe way (a regular file, plain data only: one line for each problem) before
        # Lightning reads it (for hyper-parameters saved in it, which nmt's hold none of), then again when the run
        # starts.
        subcommand = self.config.get("subcommand")
        path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if _is_checkpoint_file(path):
            self._checkpoint = read_training_checkpoint(path)

    # LightningCLI calls `before_<subcommand>` right before it runs the subcommand with `config_init`'s arguments.
    def before_fit(self) -> None:
        self._check_ckpt_path("fit")

    def before_validate(self) -> None:
        self._check_ckpt_path("validate")

    def before_test(self) -> None:
        self._check_ckpt_path("test")

    def _check_ckpt_path(self, subcommand: str) -> None:
        """Resolve `--ckpt_path last|best` to the file itself (what the run then loads), and compare the file with
        the network the config builds."""
        config = self.config_init[subcommand]
        path = config.get("ckpt_path")
        if path == "best":  # the best checkpoint of a fit earlier in the same process: there is none
            raise InputError(
                path="--ckpt_path",
                message="best is the best checkpoint of a fit earlier in the same process; from the command line, "
                "give its file (e.g. runs/NAME/checkpoints/best.ckpt)",
            )
        if path == "last":
            path = config["ckpt_path"] = newest_resume_checkpoint(self.trainer)
            if path is None:  # not an error: a job can be started with `last` before its first run
                rank_zero_warn(f"--ckpt_path last: no last checkpoint yet; the {subcommand} starts from scratch")
        if not _is_checkpoint_file(path):
            return
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
        if "weights_only" in config and config["weights_only"] is None:
            config["weights_only"] = True  # what torch.load defaults to, made explicit

    def add_arguments_to_parser(self, parser) -> None:
        # The vocabulary sizes are stated once, by the data (its SentencePiece models).
        parser.link_arguments("data.src_vocab_size", "model.src_vocab_size", apply_on="instantiate")
        parser.link_arguments("data.tgt_vocab_size", "model.tgt_vocab_size", apply_on="instantiate")
        # The module reads its tokenizer and references from the data it is given, not through the trainer.
        parser.link_arguments("data", "model.data", apply_on="instantiate")

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except ValueError as e:  # a config class refusing its values (Corpus, TokenizerConfig, …): one line
            raise InputError(path="configuration", message=str(e).strip().splitlines()[0]) from None

    def instantiate_trainer(self, **kwargs):
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


def train_cli(args: list[str], *, run: bool = True) -> NMTLightningCLI:
    """Lightning's CLI over TranslationModule + TranslationDataModule. args: ["fit", "--config", …] (or,
    with run=False, the options alone: the model, data and trainer are built but nothing is run)."""
    tips = logging.getLogger("lightning.pytorch.utilities.rank_zero")  # where rank_zero_info logs
    if not any(isinstance(f, _NoAdvertising) for f in tips.filters):
        tips.addFilter(_NoAdvertising())
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
        )


def _default_save_dirs(trainer: Namespace) -> None:
    """In a parsed trainer config, set the save_dir of every logger given none (None, or for W&B its "." with
    no `dir` either) to trainer.default_root_dir."""
    root = os.fspath(trainer.get("default_root_dir") or os.getcwd())  # Lightning's default: the working directory
    loggers = trainer.get("logger")
    for logger in loggers if isinstance(loggers, list) else [loggers]:
        if isinstance(logger, Namespace) and isinstance(logger.get("class_path"), str):
            _default_save_dir(logger, root)  # (True/False/None: Lightning's default logger, under default_root_dir)


def _default_save_dir(logger: Namespace, root: str) -> None:
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
