"""``nmt translate``: translate lines with beam search, streaming.

    nmt translate --checkpoint CKPT [--input FILE|-] [--output FILE|-] [--beam-size 5] [--n-best N] …

One output line per input line (``--n-best N``: N lines per input line), in input order. The command
streams: a reader thread reads lines ahead into a queue, and a micro-batch closes when it holds
``--batch-tokens`` source pieces *or* when no further line is available yet. Its translations are
written and flushed at once, so ``tail -f log | nmt translate …`` answers each line as it comes.

Lines are never dropped: an empty line gives an empty translation, and a line longer than
``--max-input-tokens`` pieces is translated from its first pieces (with a warning naming the line).

Output formats (fields after the translation, in this order, each only when asked for):

    plain     TRANSLATION[<TAB>LOG_PROB][<TAB>ALIGNMENT]
    n-best    ID ||| TRANSLATION ||| SCORE[ ||| LOG_PROB][ ||| ALIGNMENT]     (Moses; ID counts from 0)

LOG_PROB (``--scores``) is the total log-probability of the translation including its EOS; SCORE is the
length-normalised score the n-best list is ranked by (equal to LOG_PROB with ``--length-penalty none``).
ALIGNMENT (``--alignment``, attention models only) is Pharaoh ``i-j`` pairs: for every target piece j,
the source piece i it attends to most. Both indices count *SentencePiece pieces* from 0 — what the model
reads and writes, not words — and links to the source EOS are left out.
"""

from __future__ import annotations

import argparse
import os
import queue
import sys
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import IO, NamedTuple

import torch
from jsonargparse import ArgumentParser

from nmt.checkpoint import load_translator, resolve_device
from nmt.data.tokenizer import BOS, EOS, PAD, Tokenizer
from nmt.decoding import Ensemble, Hypothesis, SearchConfig, check_same_vocabulary, search
from nmt.errors import InputError
from nmt.textio import atomic_output, read_lines

_DEFAULTS = SearchConfig()
_END = object()  # end of input, from the reader thread


class Source(NamedTuple):
    """One input line, encoded."""

    number: int  # 1-based line number
    ids: list[int]  # source pieces followed by EOS; empty for an empty line (which is not translated)


# -- command line -------------------------------------------------------------------------------------------


def add_model_arguments(parser: ArgumentParser, *, checkpoint_required: bool = True) -> None:
    """Options shared with ``nmt evaluate``: the model(s), the search, batching and input decoding."""
    parser.add_argument("--checkpoint", required=checkpoint_required, default=None, help="checkpoint to translate with")
    parser.add_argument(
        "--ensemble",
        nargs="+",
        default=[],
        metavar="CKPT",
        help="further checkpoints (same SentencePiece model) decoded together with --checkpoint: "
        "the mean of their log-probabilities",
    )
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"], help="where to run the model")
    parser.add_argument("--beam-size", type=int, default=_DEFAULTS.beam_size, help="beam width (1 = greedy)")
    parser.add_argument(
        "--length-penalty",
        default=_DEFAULTS.length_penalty,
        choices=["none", "length", "gnmt"],
        help="rank finished hypotheses by log_prob / lp(L): lp = 1, L^alpha or ((5+L)/6)^alpha",
    )
    parser.add_argument("--alpha", type=float, default=_DEFAULTS.alpha, help="exponent of the length penalty")
    parser.add_argument(
        "--max-length-a",
        type=float,
        default=_DEFAULTS.max_length_a,
        help="output length limit a·|src| + b (|src| in pieces, EOS included)",
    )
    parser.add_argument("--max-length-b", type=int, default=_DEFAULTS.max_length_b, help="see --max-length-a")
    parser.add_argument(
        "--batch-tokens",
        type=int,
        default=2000,
        help="source pieces per micro-batch (a batch holds batch-tokens × beam-size rows)",
    )
    parser.add_argument(
        "--max-input-tokens",
        type=int,
        default=250,
        help="longer lines are translated from their first this many pieces (with a warning)",
    )
    parser.add_argument(
        "--encoding-errors",
        default="strict",
        choices=["strict", "replace"],
        help="invalid UTF-8 in the input: stop with an error, or replace it with U+FFFD",
    )


def search_config(args, parser: ArgumentParser, n_best: int = 1) -> SearchConfig:
    try:
        return SearchConfig(
            beam_size=args.beam_size,
            length_penalty=args.length_penalty,
            alpha=args.alpha,
            max_length_a=args.max_length_a,
            max_length_b=args.max_length_b,
            n_best=n_best,
        )
    except ValueError as e:
        parser.error(str(e))
        raise  # parser.error exits


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="nmt translate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", default="-", help="plain or .gz UTF-8 text, one sentence per line (- = stdin)")
    parser.add_argument("--output", default="-", help="plain or .gz (- = stdout); a file appears when complete")
    add_model_arguments(parser)
    parser.add_argument(
        "--n-best",
        type=int,
        default=None,
        metavar="N",
        help="write the N best translations of every line, Moses format 'id ||| hyp ||| score'",
    )
    parser.add_argument("--scores", action="store_true", help="append the log-probability of each translation")
    parser.add_argument(
        "--alignment",
        action="store_true",
        help="append the attention's argmax alignment, Pharaoh i-j over SentencePiece pieces",
    )
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress on stderr (default: when --output is a file)",
    )
    return parser


# -- model --------------------------------------------------------------------------------------------------


def load_model(checkpoint: str, ensemble: Sequence[str], device: str, *, need_attention: bool = False):
    """The model (an ``Ensemble`` when there are several checkpoints) and the shared tokenizer."""
    translators = [load_translator(path, device=resolve_device(device)) for path in [checkpoint, *ensemble]]
    check_same_vocabulary(translators)
    if need_attention:
        for t in translators:
            if t.network.architecture != "rnnsearch":
                raise InputError(
                    path=t.path,
                    message=f"--alignment needs an attention model (rnnsearch); "
                    f"this checkpoint is {t.network.architecture}",
                )
    models = [t.model for t in translators]
    model = models[0] if len(models) == 1 else Ensemble(models).eval()
    return model, translators[0].tokenizer


# -- encoding, batching, search -------------------------------------------------------------------------------


def encode_line(tokenizer: Tokenizer, text: str, *, number: int, path: str, max_tokens: int) -> Source:
    """One line -> its source pieces + EOS; an over-long line is cut to max_tokens pieces (warning)."""
    if not text.strip():
        return Source(number, [])
    ids = tokenizer.encode_src([text])[0]
    if len(ids) - 1 > max_tokens:
        print(
            f"nmt translate: warning: {path}:{number}: {len(ids) - 1} pieces, translating only the first "
            f"{max_tokens} (--max-input-tokens)",
            file=sys.stderr,
            flush=True,
        )
        ids = ids[:max_tokens] + [EOS]
    return Source(number, ids)


def translate_batch(
    model, sources: Sequence[Source], config: SearchConfig, device: torch.device
) -> list[list[Hypothesis]]:
    """Search all non-empty sources of a micro-batch at once; an empty line gets one empty hypothesis."""
    results: list[list[Hypothesis]] = [[Hypothesis([], 0.0, 0.0)] for _ in sources]
    todo = [i for i, s in enumerate(sources) if s.ids]
    if not todo:
        return results
    S = max(len(sources[i].ids) for i in todo)
    src = torch.full((len(todo), S), PAD, dtype=torch.long)
    for row, i in enumerate(todo):
        src[row, : len(sources[i].ids)] = torch.tensor(sources[i].ids)
    lengths = torch.tensor([len(sources[i].ids) for i in todo])
    hyps = search(model, src.to(device), lengths.to(device), config, bos_id=BOS, eos_id=EOS)
    for i, h in zip(todo, hyps, strict=True):
        results[i] = h
    return results


def device_of(model) -> torch.device:
    return next(model.parameters()).device


def micro_batches(items: queue.Queue, batch_tokens: int) -> Iterator[list[Source]]:
    """Group the reader's lines: wait for one line, then take what is already there, up to batch_tokens
    source pieces. An error from the reader is raised after the lines before it have been yielded."""
    while True:
        item = items.get()
        if item is _END:
            return
        if isinstance(item, BaseException):
            raise item
        batch, tokens = [item], len(item.ids)
        while tokens < batch_tokens:
            try:
                item = items.get_nowait()
            except queue.Empty:
                break
            if item is _END or isinstance(item, BaseException):
                yield batch
                if item is _END:
                    return
                raise item
            batch.append(item)
            tokens += len(item.ids)
        yield batch


def start_reader(path: str, encode, *, errors: str, look_ahead: int = 10_000) -> queue.Queue:
    """A daemon thread that reads and encodes lines into a bounded queue, then puts _END (or the error)."""
    items: queue.Queue = queue.Queue(maxsize=look_ahead)

    def read() -> None:
        try:
            for number, (text, _) in enumerate(read_lines(path, errors=errors), start=1):
                items.put(encode(text, number))
        except BaseException as e:  # handed to the main thread, which raises it
            items.put(e)
            return
        items.put(_END)

    threading.Thread(target=read, name="nmt-translate-reader", daemon=True).start()
    return items


# -- output ---------------------------------------------------------------------------------------------------


def alignment(hypothesis: Hypothesis, src_len: int) -> str:
    """Pharaoh 'i-j' links: target piece j -> the source piece i of highest attention (source EOS left out)."""
    if hypothesis.alpha is None or not hypothesis.tokens:
        return ""
    best = hypothesis.alpha[: len(hypothesis.tokens)].argmax(dim=-1).tolist()  # (T,) source index per piece
    return " ".join(f"{i}-{j}" for j, i in enumerate(best) if i < src_len - 1)


def format_lines(
    source: Source, hyps: list[Hypothesis], texts: list[str], *, n_best: int | None, scores: bool, align: bool
) -> Iterable[str]:
    """The output line(s) of one input line (see the module docstring)."""
    for hyp, text in zip(hyps if n_best else hyps[:1], texts, strict=False):
        extra = ([f"{hyp.log_prob:.4f}"] if scores else []) + ([alignment(hyp, len(source.ids))] if align else [])
        if n_best:
            yield " ||| ".join([str(source.number - 1), text, f"{hyp.score:.4f}", *extra])
        else:
            yield "\t".join([text, *extra])


def write_batch(out: IO[str], tokenizer: Tokenizer, batch: list[Source], hyps: list[list[Hypothesis]], args) -> None:
    for source, found in zip(batch, hyps, strict=True):
        texts = tokenizer.decode_tgt([h.tokens for h in found])
        for line in format_lines(source, found, texts, n_best=args.n_best, scores=args.scores, align=args.alignment):
            out.write(line + "\n")
    out.flush()


# -- main -----------------------------------------------------------------------------------------------------


def main(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    config = search_config(args, parser, n_best=1 if args.n_best is None else args.n_best)
    model, tokenizer = load_model(args.checkpoint, args.ensemble, args.device, need_attention=args.alignment)
    device = device_of(model)

    def encode(text: str, number: int) -> Source:
        return encode_line(tokenizer, text, number=number, path=args.input, max_tokens=args.max_input_tokens)

    items = start_reader(args.input, encode, errors=args.encoding_errors)
    show_progress = args.output != "-" if args.progress is None else args.progress
    try:
        with atomic_output(args.output) as out, _progress(show_progress) as bar:
            for batch in micro_batches(items, args.batch_tokens):
                write_batch(out, tokenizer, batch, translate_batch(model, batch, config, device), args)
                bar.update(len(batch))
    except BrokenPipeError:  # the reader of our output went away (e.g. `| head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    return 0


def _progress(enabled: bool):
    from tqdm import tqdm

    return tqdm(disable=not enabled, unit=" lines", file=sys.stderr, dynamic_ncols=True, mininterval=0.5)
