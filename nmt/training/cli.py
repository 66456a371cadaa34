"""`nmt fit|validate|test`: Lightning's CLI over `TranslationModule` and `TranslationDataModule`.

Before jsonargparse reads them, the ``--config`` files are checked (one line for bad YAML) and every import path a
config names is held to ``nmt``, ``lightning`` and ``torch``. Loggers without a ``save_dir`` log under the run's
``trainer.default_root_dir`` and checkpoint callbacks without a ``dirpath`` write to ``default_root_dir/checkpoints``;
a ``--ckpt_path`` file is read the safe way (`nmt.training.checkpoint`) and compared with the configured network;
checkpoints are written atomically (`nmt.training.resume`).
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import inspect
import logging
import os
import re
import stat
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import lightning.pytorch
import yaml
from jsonargparse import ActionConfigFile, Namespace
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_info

from nmt.data.datamodule import TranslationDataModule
from nmt.errors import InputError
from nmt.training import LIGHTNING_COMMANDS
from nmt.training.checkpoint import check_training_checkpoint, read_training_checkpoint
from nmt.training.module import TranslationModule
from nmt.training.resume import (
    default_checkpoint_dir,
    install_atomic_checkpoint_io,
    newest_resume_checkpoint,
    use_default_checkpoint_dir,
)

# The modules whose classes a training config may name (class_path, and any other import path jsonargparse
# resolves): nmt's own and the libraries it builds on. Checked before anything is imported, since importing a
# module runs its code. NMT_ALLOW_ANY_CLASS_PATH=1 lifts the restriction (for configs naming your own classes).
ALLOWED_IMPORT_PREFIXES = ("nmt", "lightning", "torch")
ALLOW_ANY_CLASS_PATH_ENV = "NMT_ALLOW_ANY_CLASS_PATH"
_DENIED_IMPORT = re.compile(r"Importing '([\w.]+)' is not allowed")
_PARSER_KEY = re.compile(r'Parser key "([^"]+)"')
_VALIDATION_KEY_NOT_YET_LOGGED = (
    r"`ModelCheckpoint\(monitor='val/(loss|ppl|bleu|chrf)'\)` could not find the monitored key"
)
_ONLY_RESUME_CHECKPOINT_MISSING = (
    r"Be aware that when using `ckpt_path`, callbacks used to create the checkpoint need to be provided.*"
    r"Please add the following callbacks: \[(\"ResumeCheckpoint\{[^}]*\}\"(, )?)+\]\.$"
)
_LIGHTNING_PYTREE = r"lightning\.pytorch\.utilities\._pytree"
_PATH_LIKE = re.compile(r"[\w.~-]*/[\w./~-]*")  # a --config value that is a path, not YAML text
_CKPT_PATH_KEYWORDS = ("last", "best", "hpc")  # --ckpt_path values Lightning resolves itself


class _NoAdvertising(logging.Filter):
    """Drops Lightning's "💡 Tip: … try installing litlogger / litmodels" lines: advertising for a cloud service,
    printed on every run, that our users' terminals (and logs) do not need."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip:")


class NMTArgumentParser(LightningArgumentParser):
    """Lightning's parser, with every parse error one line (an `InputError`: the CLI prints ``nmt fit: error:
    WHERE: KEY: what is wrong; did you mean KEY?`` and exits with status 2) instead of the usage and jsonargparse's
    report: the key as the user wrote it, where (``FILE:LINE`` of a --config file, or ``command line``) and the
    nearest valid key; a class path of a module that moved, the new path. Options are never abbreviated
    (``--trainer.max_step`` is an unknown option, not ``--trainer.max_steps``)."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str, ex: Exception | None = None):
        if not self.exit_on_error:  # a parser tried inside another (a Union's types): its caller decides
            super().error(message, ex)
        parser = getattr(ex, "subcommand_parser", None) or self
        raise config_error(message, parser, _COMMAND_LINE.get()) from None

    def format_help(self) -> str:
        # The network's options are one typed value, --model.network, in Lightning's help: listed here, near the
        # top, each with its help (jsonargparse shows them only behind --model.network.help NetworkConfig).
        text = super().format_help()
        if "model.network" not in {action.dest for action in self._actions}:
            return text
        usage, options, rest = text.partition("\noptions:\n")
        return usage + "\n" + _network_options_help() + options + rest if options else text

    def valid_keys(self) -> list[str]:
        """The dotted keys this (subcommand's) parser takes, and the parameters of the nmt classes those name (a
        network's emb_dim: model.network.emb_dim)."""
        keys = []
        for action in self._actions:
            if not any(option.startswith("--") for option in action.option_strings) or action.dest == "help":
                continue
            keys.append(action.dest)
            for kind in _classes_of(getattr(action, "_typehint", None)):
                keys.extend(f"{action.dest}.{name}" for name in _parameters(f"{kind.__module__}.{kind.__qualname__}"))
        return keys

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
        subcommand = self.config.get("subcommand")
        given = _COMMAND_LINE.get()
        if subcommand and not self.config[subcommand].get("config") and not any(a.startswith("--data") for a in given):
            raise InputError(  # (else Lightning sets a seed, then the data refuses its empty corpus)
                path="command line",
                message=f"no config given; every option comes from one: nmt {subcommand} --config configs/tiny.yaml"
                + (" --ckpt_path CKPT" if subcommand != "fit" else "")
                + " (see configs/)",
            )
        # Read --ckpt_path the safe way (a regular file, plain data only: one line for each problem) before
        # Lightning reads it (for hyper-parameters saved in it, which nmt's hold none of), then again when the run
        # starts.
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
                searched = default_checkpoint_dir(self.trainer)
                starts = "a new run starts" if subcommand == "fit" else f"the {subcommand} uses an untrained network"
                rank_zero_info(f"--ckpt_path last: no checkpoint to resume in {searched}; {starts}")
        if not _is_checkpoint_file(path):
            return
        if subcommand == "fit":
            for callback in self.trainer.checkpoint_callbacks:
                # Lightning warns of a non-empty checkpoint directory whether or not the run resumes; resuming, the
                # files are this run's own (ResumeCheckpoint says what is resumed). Ignored within this run only:
                # train_cli restores the warning filters.
                if isinstance(callback, ModelCheckpoint) and callback.dirpath:
                    warnings.filterwarnings(
                        "ignore", message=re.escape(f"Checkpoint directory {callback.dirpath} exists and is not empty")
                    )
            # ResumeCheckpoint's key in a checkpoint names its directory (unchanged since nmt 0.1.0, see its state_key):
            # a run resumed from a moved directory has another key, and Lightning asks for "the callbacks used to
            # create the checkpoint". Its state is not needed to resume (last.ckpt is rewritten at the next resume
            # point); a missing callback of any other kind still warns.
            warnings.filterwarnings("ignore", message=_ONLY_RESUME_CHECKPOINT_MISSING)
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
    command_line = list(sys.argv[1:] if args is None else args if isinstance(args, (list, tuple)) else [])
    _check_config_files(command_line)
    given = _COMMAND_LINE.set(command_line)
    try:
        with _import_paths_restricted(), warnings.catch_warnings():
            # Lightning's own code calls a torch function that torch deprecated (Lightning's to change, nothing a
            # user can do): not shown on every run.
            warnings.filterwarnings(
                "ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated", module=_LIGHTNING_PYTREE
            )
            # A run that stops (max_steps, a time limit) before its first validation has no val/bleu yet to rank
            # best.ckpt by: Lightning then says the key was never logged ("Did you call log('val/bleu')?"), which
            # is untrue of the keys every validation logs; a monitor naming any other key still warns.
            warnings.filterwarnings("ignore", message=_VALIDATION_KEY_NOT_YET_LOGGED)
            return _lightning_cli(args, run=run)
    finally:
        _COMMAND_LINE.reset(given)


def _lightning_cli(args: list[str], *, run: bool) -> NMTLightningCLI:
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
            if path.endswith((".yaml", ".yml", ".json")) or _PATH_LIKE.fullmatch(path):
                near = next((path + ext for ext in (".yaml", ".yml") if os.path.isfile(path + ext)), None)
                raise InputError(
                    path=path, message="config file not found" + (f"; did you mean {near}?" if near else "")
                ) from None
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


def _network_options_help() -> str:
    """The model.network.* options, each with its help (NetworkConfig's attribute docstrings) and default."""
    from jsonargparse import ArgumentParser, set_parsing_settings
    from jsonargparse import _common as jsonargparse_settings

    from nmt.model import NetworkConfig

    saved = dict(jsonargparse_settings.parsing_settings)  # process-wide: restored afterwards
    set_parsing_settings(docstring_parse_attribute_docstrings=True)
    try:
        parser = ArgumentParser(prog="nmt fit", usage=argparse.SUPPRESS, add_help=False)
        parser.add_class_arguments(NetworkConfig, "model.network")
        text = parser.format_help()
    finally:
        jsonargparse_settings.parsing_settings.update(saved)
    where = "in the config under model: network:, or on the command line as --model.network.NAME VALUE"
    return f"network options ({where}):\n" + text.partition(":\n")[2]


# -- parse errors as one line -------------------------------------------------------------------------------------

_COMMAND_LINE: ContextVar[list[str] | tuple[()]] = ContextVar("nmt_training_command_line", default=())
"""The arguments `train_cli` is parsing: where a parse error looks for the key it names."""

_UNRECOGNIZED = re.compile(r"unrecognized arguments: (.*)", re.S)
_NOT_ACCEPTED_IN_CONFIG = re.compile(r"Subcommand '\w+' does not accept option '([^']+)'")
_NOT_ACCEPTED_BY_CLASS = re.compile(r"Problem with given class_path '([\w.]+)':\s*Option '(\w+)' is not accepted")
_CLASS_PATH = re.compile(r"class_path '([\w.]+)'|Expected a path but ([\w.]+) either not accessible")
_FILE_MISSING = re.compile(r"File does not exist: '([^']*)'")
_PYTHON_TYPE = re.compile(r"<class '(?:[\w]+\.)*(\w+)'>")


def config_error(message: str, parser: NMTArgumentParser, args: list[str]) -> InputError:
    """The one line for a jsonargparse error `message` of `parser` (the subcommand's, or the main one), the command
    line being `args`."""
    if denied := _DENIED_IMPORT.search(message):  # an import path outside ALLOWED_IMPORT_PREFIXES
        key = _PARSER_KEY.search(message)
        return InputError(
            path="configuration",
            message=(f"{key.group(1)}: " if key else "")
            + f"class_path {denied.group(1)!r} is outside the modules a config may name "
            f"({', '.join(ALLOWED_IMPORT_PREFIXES)}); nothing of it was imported "
            f"({ALLOW_ANY_CLASS_PATH_ENV}=1 allows any module)",
        )
    if match := _UNRECOGNIZED.match(message):
        return _unknown_on_command_line(match.group(1).split(), parser)
    if match := _NOT_ACCEPTED_IN_CONFIG.search(message):
        return _unknown_key(match.group(1).split("."), parser.valid_keys(), args)
    if match := _NOT_ACCEPTED_BY_CLASS.search(message):
        section = _PARSER_KEY.search(message).group(1).split(".")
        names = _parameters(match.group(1))
        return _unknown_key([*section, match.group(2)], [".".join([*section, name]) for name in names], args)
    for class_path in (path for match in _CLASS_PATH.finditer(message) for path in match.groups() if path):
        if class_path.startswith("nmt.") and not _importable(class_path):
            where = _value_location(class_path, args)
            moved = "nmt.training." + class_path.removeprefix("nmt.")
            fix = f"it is now {moved}" if _importable(moved) else "nmt has no such class"
            return InputError(path=where[0], line=where[1], message=f"class_path {class_path}: {fix}")
    if match := _FILE_MISSING.search(message):
        return InputError(path=match.group(1), message="config file not found")
    key = _PARSER_KEY.search(message)
    name = key.group(1) if key else None
    where = _key_location(name.split("."), args) if name else None
    path, line, written = where or ("configuration", None, name)
    return InputError(path=path, line=line, message=(f"{written}: " if written else "") + _reason(message))


def _unknown_on_command_line(words: list[str], parser: NMTArgumentParser) -> InputError:
    """The first of the words the parser did not take: an option it does not know, or a stray argument."""
    flag = next((word.partition("=")[0] for word in words if word.startswith("-")), None)
    if flag is None:
        return InputError(
            path="command line", message=f"unexpected argument {words[0]!r} (options start with --; nmt fit --help)"
        )
    key = flag.lstrip("-")
    near = _nearest_key(key.split("."), parser.valid_keys())
    hint = f"did you mean --{near}?" if near else "--help lists the options"
    return InputError(path="command line", message=f"{flag}: unknown option; {hint}")


def _unknown_key(key: list[str], valid: list[str], args: list[str]) -> InputError:
    """A key (from a config file, or a class's parameter on the command line) that no option has: named as
    written, where it was given, and the nearest valid key."""
    wrong = _first_unknown(key, valid)
    where = _key_location(key[:wrong], args) or ("configuration", None, ".".join(key[:wrong]))
    path, line, written = where
    near = _nearest_key(key[:wrong], valid)
    if near is not None and written.startswith("--"):
        near = "--" + near
    if near is not None and "init_args" in written.split(".") and "init_args" not in near:
        near = near.replace(".", ".init_args.", 1) if near.count(".") == 1 else near
    hint = f"did you mean {near}?" if near else "--help lists the options"
    return InputError(path=path, line=line, message=f"{written}: unknown option; {hint}")


def _classes_of(typehint: object) -> list[type]:
    """The nmt configuration classes a type hint names (NetworkConfig in `NetworkConfig | None`)."""
    kinds = [typehint, *getattr(typehint, "__args__", ())]
    return [kind for kind in kinds if isinstance(kind, type) and kind.__module__.startswith("nmt.")]


def _parameters(class_path: str) -> list[str]:
    """The parameter names of the class at `class_path` (none if it cannot be found)."""
    module, _, name = class_path.rpartition(".")
    try:
        kind = getattr(importlib.import_module(module), name)
        parameters = inspect.signature(kind).parameters.values()
    except (ImportError, AttributeError, TypeError, ValueError):
        return []
    return [p.name for p in parameters if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def _first_unknown(key: list[str], valid: list[str]) -> int:
    """How many parts of `key` up to and including the first no valid key has at its place."""
    known = [k.split(".") for k in valid]
    for depth in range(1, len(key) + 1):
        if not any(k[:depth] == key[:depth] for k in known):
            return depth
    return len(key)


def _nearest_key(key: list[str], valid: list[str]) -> str | None:
    """The valid key most like `key`, its parts before the first unknown one kept ("did you mean")."""
    key = [part for part in key if part != "init_args"]
    known = [[part for part in k.split(".") if part != "init_args"] for k in valid]
    depth = _first_unknown(key, [".".join(k) for k in known])
    prefix = key[: depth - 1]
    options = sorted({k[depth - 1] for k in known if len(k) >= depth and k[: depth - 1] == prefix})
    near = difflib.get_close_matches(key[depth - 1], options, n=1, cutoff=0.6)
    if not near:
        return None
    whole = [*prefix, near[0], *key[depth:]]  # --modle.network.emb_dim: model.network.emb_dim, if it is one
    return ".".join(whole if whole in known else [*prefix, near[0]])


def _key_location(key: list[str], args: list[str]) -> tuple[str, int | None, str] | None:
    """(where, line, the key as written) of a dotted key: "command line" if an argument gives it (--KEY or
    --KEY=…), else the last --config file whose YAML has it (init_args levels optional), else None."""
    plain = [part for part in key if part != "init_args"]
    for arg in args:
        flag = arg.partition("=")[0]
        if flag.startswith("--") and [p for p in flag[2:].split(".") if p != "init_args"] == plain:
            return "command line", None, flag
    found = None
    for path in _config_files(args):
        if (hit := _yaml_key(_yaml_tree(path), plain, [])) is not None:
            found = (path, hit[0], ".".join(hit[1]))
    return found


def _value_location(value: str, args: list[str]) -> tuple[str, int | None]:
    """Where a class path was given: "command line", or FILE and LINE of the last --config file holding it."""
    if any(value in arg for arg in args if not arg.startswith("-") or "=" in arg):
        found: tuple[str, int | None] = ("command line", None)
    else:
        found = ("configuration", None)
    for path in _config_files(args):
        for node in _yaml_nodes(_yaml_tree(path)):
            if isinstance(node, yaml.ScalarNode) and node.value == value:
                found = (path, node.start_mark.line + 1)
    return found


def _config_files(args: list[str]) -> list[str]:
    values = iter(args)
    files = []
    for arg in values:
        if arg == "--":
            break
        path = (
            next(values, None)
            if arg in ("--config", "-c")
            else arg.partition("=")[2]
            if arg.startswith("--config=")
            else None
        )
        if path is not None and os.path.isfile(path):
            files.append(path)
    return files


def _yaml_tree(path: str) -> yaml.Node | None:
    try:
        with open(path, encoding="utf-8") as f:
            return yaml.compose(f)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):  # reported by _check_config_files
        return None


def _yaml_key(node: yaml.Node | None, key: list[str], written: list[str]) -> tuple[int, list[str]] | None:
    """(line, the path as written) of `key` below `node`, init_args levels and lists (of callbacks) passed."""
    if isinstance(node, yaml.SequenceNode):
        return next((hit for item in node.value if (hit := _yaml_key(item, key, written))), None)
    if not isinstance(node, yaml.MappingNode) or not key:
        return None
    for name, value in node.value:
        if name.value == key[0]:
            if len(key) == 1:
                return name.start_mark.line + 1, [*written, name.value]
            if hit := _yaml_key(value, key[1:], [*written, name.value]):
                return hit
        elif name.value == "init_args" and (hit := _yaml_key(value, key, [*written, name.value])):
            return hit
    return None


def _yaml_nodes(node: yaml.Node | None) -> Iterator[yaml.Node]:
    if node is None:
        return
    yield node
    if isinstance(node, yaml.SequenceNode):
        for item in node.value:
            yield from _yaml_nodes(item)
    elif isinstance(node, yaml.MappingNode):
        for _name, value in node.value:
            yield from _yaml_nodes(value)


def _importable(class_path: str) -> bool:
    module, _, name = class_path.rpartition(".")
    try:
        return hasattr(importlib.import_module(module), name)
    except ImportError:
        return False


def _reason(message: str) -> str:
    """jsonargparse's report of a value it refused, on one line: what each type expected, and the value."""
    lines = [line.strip().lstrip("- ").strip() for line in message.splitlines()]
    expected = [line for line in lines if line.startswith("Expected") and "NoneType" not in line]
    given = next((line for line in lines if line.startswith("Given value:")), None)
    problems = [
        line
        for line in lines
        if line
        and not line.startswith(
            ("Parser key", "Does not validate", "Subtypes:", "Errors:", "Given value", "Expected", "Problem with given")
        )
    ]
    parts = expected or problems[:2] or [lines[-1] if lines else "invalid"]
    if given:
        parts.append(given.replace("Given value:", "given:"))
    text = "; ".join(dict.fromkeys(_PYTHON_TYPE.sub(r"\1", part).replace("Expected a ", "expected ") for part in parts))
    return text if len(text) <= 300 else text[:297] + "…"
