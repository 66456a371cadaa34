"""The ``nmt`` command.

Training, validation and testing are Lightning's own CLI (``nmt fit|validate|test --config …``): every
Trainer, model and data option comes from the YAML config or the command line, and ``--print_config``
shows the resolved configuration. The inference commands (translate, evaluate, score, …) are small
jsonargparse parsers of their own modules.
"""

from __future__ import annotations

import importlib
import sys

from nmt.errors import InputError

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

    class NMTLightningCLI(LightningCLI):
        def add_arguments_to_parser(self, parser) -> None:  # noqa: ANN001 (jsonargparse parser)
            # The vocabulary sizes are stated once, by the data (its SentencePiece models).
            parser.link_arguments("data.src_vocab_size", "model.src_vocab_size", apply_on="instantiate")
            parser.link_arguments("data.tgt_vocab_size", "model.tgt_vocab_size", apply_on="instantiate")

    return NMTLightningCLI(
        TranslationModule,
        TranslationDataModule,
        args=args,
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
    except KeyboardInterrupt:
        print(f"nmt {command}: interrupted", file=sys.stderr)
        return 130
    sys.stderr.write(f"nmt: unknown command {command!r}\n" + usage())
    return 2


if __name__ == "__main__":
    sys.exit(main())
