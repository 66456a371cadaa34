"""The ``nmt`` command.

Training, validation and testing are Lightning's own CLI (``nmt fit|validate|test --config …``): every
Trainer, model and data option comes from the YAML config or the command line, and ``--print_config``
shows the resolved configuration. The inference commands (translate, evaluate, score, …) are small
jsonargparse parsers of their own modules.
"""

from __future__ import annotations

import importlib
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from nmt.errors import InputError, TrainingDiverged

# command -> module with a ``main(argv) -> int``
TOOLS = {
    "translate": "nmt.commands.translate",
    "evaluate": "nmt.commands.evaluate",
    "score": "nmt.commands.score",
    "embed": "nmt.commands.embed",
    "plot-attention": "nmt.commands.plot_attention",
    "plot-curves": "nmt.commands.plot_curves",
}
LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")


def train_cli(args: list[str], *, run: bool = True):  # noqa: ANN201 (a LightningCLI)
    """Lightning's CLI over TranslationModule + TranslationDataModule. args: ["fit", "--config", …] (or,
    with run=False, the options alone: the model, data and trainer are built but nothing is run)."""
    from lightning.pytorch.cli import LightningCLI

    from nmt.data.datamodule import TranslationDataModule
    from nmt.module import TranslationModule
    from nmt.resume import install_atomic_checkpoint_io, newest_resume_checkpoint

    class NMTLightningCLI(LightningCLI):
        def add_arguments_to_parser(self, parser) -> None:  # noqa: ANN001 (jsonargparse parser)
            # The vocabulary sizes are stated once, by the data (its SentencePiece models).
            parser.link_arguments("data.src_vocab_size", "model.src_vocab_size", apply_on="instantiate")
            parser.link_arguments("data.tgt_vocab_size", "model.tgt_vocab_size", apply_on="instantiate")

        def instantiate_classes(self) -> None:
            try:
                super().instantiate_classes()
            except ValueError as e:  # a config class refusing its values (Corpus, TokenizerConfig, …): one line
                raise InputError(path="configuration", message=str(e).strip().splitlines()[0]) from None

        def instantiate_trainer(self, **kwargs):  # noqa: ANN003, ANN202 (LightningCLI's signature)
            trainer = super().instantiate_trainer(**kwargs)
            install_atomic_checkpoint_io(trainer)  # a kill while a checkpoint is written leaves the old one
            return trainer

        def before_fit(self) -> None:
            # `--ckpt_path last` also considers the checkpoint Lightning writes when SLURM preempts the job,
            # so a requeued job resumes from whichever is newer.
            config = self.config_init[self.subcommand]
            if config.get("ckpt_path") == "last" and (newest := newest_resume_checkpoint(self.trainer)):
                config["ckpt_path"] = newest

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


def usage() -> str:
    return (
        "usage: nmt {fit,validate,test} --config CONFIG [options]   (Lightning CLI; --help for all options)\n"
        "       nmt {" + ",".join(TOOLS) + "} [options]\n"
    )


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        sys.stdout.write(usage())
        return 0 if argv else 2
    command = argv[0]
    try:
        if command in TOOLS:
            with _sigterm_raises():
                return importlib.import_module(TOOLS[command]).main(argv[1:]) or 0
        if command in LIGHTNING_COMMANDS:
            try:
                train_cli(argv)
            except FileNotFoundError as e:  # e.g. a --ckpt_path that does not exist: Lightning raises it plainly
                raise InputError(path=e.filename or command, message=str(e.strerror or e)) from None
            return 0
    except InputError as e:
        print(f"nmt {command}: error: {e}", file=sys.stderr)
        return 2
    except TrainingDiverged as e:
        print(f"nmt {command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"nmt {command}: interrupted", file=sys.stderr)
        return 130
    except _Terminated:
        print(f"nmt {command}: terminated", file=sys.stderr)
        return 128 + signal.SIGTERM
    sys.stderr.write(f"nmt: unknown command {command!r}\n" + usage())
    return 2


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
