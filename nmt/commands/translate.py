"""``nmt translate``: translate lines with beam search, streaming.

    nmt translate --checkpoint CKPT [--input FILE|-] [--output FILE|-] [--beam-size 5] [--n-best N] …

One output line per input line (``--n-best N``: N lines, each starting with the input line's id; a blank
input line has one, empty, hypothesis), in input order. The command streams: a reader thread reads and
encodes lines ahead into a queue; the main thread takes the lines already there (waiting only for the
first), up to 8 batches' worth, sorts them by length and translates them in batches of ``--batch-tokens``
source pieces. Each translation is written, and the output flushed, as soon as every line before it is
done, so ``tail -f log | nmt translate …`` answers each line as it comes, and a file is decoded in batches
of similar length.

Lines are never dropped: an empty (or blank) line gives an empty translation (score 0), and a line
longer than ``--max-input-tokens`` pieces is translated from its first pieces (warning naming the line).
Output lines end with "\\n" whatever the input's line ends ("\\r\\n" is read as a line end and not written
back; a last line without one gets one), and a translation never holds a line break of its own. A NaN or
infinite score (a broken model) stops the command with an error naming the line.

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
import math
import queue
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import IO, NamedTuple

import torch
from jsonargparse import ArgumentParser

from nmt.checkpoint import DTYPES, load_translator, resolve_device
from nmt.commands import options
from nmt.commands.options import CommandParser, Range
from nmt.data.tokenizer import BOS, EOS, PAD, Tokenizer
from nmt.decoding import Ensemble, Hypothesis, SearchConfig, check_same_vocabulary, search
from nmt.errors import InputError
from nmt.textio import atomic_output, check_output, read_lines, single_line

_DEFAULTS = SearchConfig()
_END = object()  # end of input, from the reader thread
WINDOW_BATCHES = 8  # lines already read are sorted by length over up to this many batches


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
    parser.add_argument(
        "--dtype",
        default="float32",
        choices=list(DTYPES),
        help="weights and activations: float32 (as trained) or bfloat16 (scores stay float32; about 2x faster "
        "on GPUs and on CPUs with AVX-512 BF16 or AMX, much slower on CPUs without them)",
    )
    parser.add_argument(
        "--threads",
        type=options.THREADS,
        default=0,
        help="CPU threads for torch (0: torch's default, all cores; on a busy machine 1 can be much faster)",
    )
    parser.add_argument(
        "--beam-size", type=options.BEAM_SIZE, default=_DEFAULTS.beam_size, help="beam width (1 = greedy)"
    )
    parser.add_argument(
        "--length-penalty",
        default=_DEFAULTS.length_penalty,
        choices=["none", "length", "gnmt"],
        help="rank finished hypotheses by log_prob / lp(L): lp = 1, L^alpha or ((5+L)/6)^alpha",
    )
    parser.add_argument(
        "--alpha",
        type=Range(float, 0.0, 10.0),
        default=_DEFAULTS.alpha,
        help="exponent of the length penalty",
    )
    parser.add_argument(
        "--max-length-a",
        type=Range(float, 0.0, 10.0),
        default=_DEFAULTS.max_length_a,
        help="output length limit a·|src| + b (|src| in pieces, EOS included)",
    )
    parser.add_argument(
        "--max-length-b", type=options.count(0, 1000), default=_DEFAULTS.max_length_b, help="see --max-length-a"
    )
    parser.add_argument(
        "--batch-tokens",
        type=options.BATCH_TOKENS,
        default=500,
        help="source pieces per batch; a batch has about batch-tokens / |src| × beam-size rows "
        "(500 ≈ 32 Multi30k sentences, the fastest on 1-2 CPU threads; use more on a GPU)",
    )
    parser.add_argument(
        "--max-input-tokens",
        type=options.PIECES,
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
    options.check_n_best(n_best, args.beam_size)
    options.check_output_limit(args.max_length_a, args.max_length_b)
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
    parser = CommandParser(prog="nmt translate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", default="-", help="plain or .gz UTF-8 text, one sentence per line (- = stdin)")
    parser.add_argument("--output", default="-", help="plain or .gz (- = stdout); a file appears when complete")
    add_model_arguments(parser)
    parser.add_argument(
        "--n-best",
        type=options.N_BEST,
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


def load_model(
    checkpoint: str, ensemble: Sequence[str], device: str, *, dtype: str = "float32", need_attention: bool = False
):
    """The model (an ``Ensemble`` when there are several checkpoints) and the shared tokenizer."""
    target, weights_dtype = resolve_device(device), DTYPES[dtype]
    translators = [load_translator(path, device=target, dtype=weights_dtype) for path in [checkpoint, *ensemble]]
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


def encode_line(
    tokenizer: Tokenizer, text: str, *, number: int, path: str, max_tokens: int, prog: str = "nmt translate"
) -> Source:
    """One line -> its source pieces + EOS; an over-long line is cut to max_tokens pieces (warning)."""
    if not text.strip():
        return Source(number, [])
    ids = tokenizer.encode_src([text])[0]
    if len(ids) - 1 > max_tokens:
        print(
            f"{prog}: warning: {path}:{number}: {len(ids) - 1} pieces, translating only the first "
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


def check_finite(sources: Sequence[Source], found: Sequence[list[Hypothesis]], path: str) -> None:
    """A NaN or infinite score means the network overflowed or its weights are broken: its words are garbage."""
    for source, hyps in zip(sources, found, strict=True):
        bad = next((h for h in hyps if not (math.isfinite(h.log_prob) and math.isfinite(h.score))), None)
        if bad is not None:
            raise InputError(
                path=path,
                line=source.number,
                message=f"the model scores its translation of this line {bad.log_prob} (its network overflows or "
                "its weights are broken); stopping rather than writing it",
            )


def device_of(model) -> torch.device:
    return next(model.parameters()).device


def windows(items: queue.Queue, max_tokens: int) -> Iterator[list[Source]]:
    """Group the reader's lines: wait for one line, then take what is already there, up to max_tokens
    source pieces. An error from the reader is raised after the lines before it have been yielded."""
    while True:
        item = items.get()
        if item is _END:
            return
        if isinstance(item, BaseException):
            raise item
        window, tokens = [item], max(1, len(item.ids))
        while tokens < max_tokens:
            try:
                item = items.get_nowait()
            except queue.Empty:
                break
            if item is _END or isinstance(item, BaseException):
                yield window
                if item is _END:
                    return
                raise item
            window.append(item)
            tokens += max(1, len(item.ids))
        yield window


def length_batches(sources: Sequence[Source], batch_tokens: int) -> list[list[Source]]:
    """Sort by length and cut into batches of at most batch_tokens source pieces (at least one line each):
    similar lengths waste less on padding (about 30% faster decoding on Multi30k than file order)."""
    batches: list[list[Source]] = []
    tokens = 0
    for source in sorted(sources, key=lambda s: len(s.ids)):
        if not batches or tokens + len(source.ids) > batch_tokens:
            batches.append([])
            tokens = 0
        batches[-1].append(source)
        tokens += len(source.ids)
    return batches


def start_reader(path: str, encode, *, errors: str, look_ahead: int = 10_000) -> tuple[queue.Queue, Callable[[], None]]:
    """A daemon thread that reads and encodes lines into a bounded queue, then puts _END (or the error).

    Returns the queue and `stop`, which the main thread calls when it is done, whichever way (finished, an
    error, a closed pipe, Ctrl-C): the reader then ends at its next line. The interpreter may exit while the
    reader still waits for input (a thread blocked in a read is abandoned cleanly), but never while it is inside
    `encode` (SentencePiece's C++: a thread stopped there at exit aborts the process, "terminate called without
    an active exception"): `stop` waits for the line being encoded."""
    items: queue.Queue = queue.Queue(maxsize=look_ahead)
    stopping = threading.Event()
    encoding = threading.Lock()  # held while a line is encoded

    def put(item: object) -> bool:
        while not stopping.is_set():
            try:
                items.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False  # the main thread has gone

    def read() -> None:
        try:
            for number, (text, _) in enumerate(read_lines(path, errors=errors), start=1):
                with encoding:
                    if stopping.is_set():
                        return
                    source = encode(text, number)
                if not put(source):
                    return
        except BaseException as e:  # handed to the main thread, which raises it
            put(e)
            return
        put(_END)

    def stop() -> None:
        with encoding:
            stopping.set()

    threading.Thread(target=read, name="nmt-translate-reader", daemon=True).start()
    return items, stop


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


class InOrderWriter:
    """Writes translations in input order as soon as every line before them is done."""

    def __init__(self, out: IO[str], tokenizer: Tokenizer, args) -> None:
        self.out, self.tokenizer, self.args = out, tokenizer, args
        self.next_line = 1
        self.waiting: dict[int, tuple[Source, list[Hypothesis]]] = {}

    def add(self, sources: Sequence[Source], hyps: Sequence[list[Hypothesis]]) -> int:
        """Take a batch's results, write what is ready, flush. Returns the number of lines written."""
        self.waiting.update((s.number, (s, h)) for s, h in zip(sources, hyps, strict=True))
        written = 0
        while self.next_line in self.waiting:
            self._write(*self.waiting.pop(self.next_line))
            self.next_line += 1
            written += 1
        self.out.flush()
        return written

    def _write(self, source: Source, found: list[Hypothesis]) -> None:
        a = self.args
        texts = [single_line(text) for text in self.tokenizer.decode_tgt([h.tokens for h in found])]
        for line in format_lines(source, found, texts, n_best=a.n_best, scores=a.scores, align=a.alignment):
            self.out.write(line + "\n")


# -- main -----------------------------------------------------------------------------------------------------


def main(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    config = search_config(args, parser, n_best=1 if args.n_best is None else args.n_best)
    inputs = [args.input, args.checkpoint, *args.ensemble]
    check_output(args.output, inputs)  # before the model is loaded
    model, tokenizer = load_model(
        args.checkpoint, args.ensemble, args.device, dtype=args.dtype, need_attention=args.alignment
    )
    options.check_beam_width(args.beam_size, tokenizer.tgt_vocab_size, args.checkpoint)
    device = device_of(model)

    def encode(text: str, number: int) -> Source:
        return encode_line(tokenizer, text, number=number, path=args.input, max_tokens=args.max_input_tokens)

    show_progress = args.output != "-" if args.progress is None else args.progress
    with torch_threads(args.threads), atomic_output(args.output, inputs=inputs) as out, _progress(show_progress) as bar:
        # Started once the output is open: a bad output path then stops us before any thread runs.
        items, stop_reader = start_reader(args.input, encode, errors=args.encoding_errors)
        try:
            writer = InOrderWriter(out, tokenizer, args)
            for window in windows(items, WINDOW_BATCHES * args.batch_tokens):
                for batch in length_batches(window, args.batch_tokens):
                    found = translate_batch(model, batch, config, device)
                    check_finite(batch, found, args.input)
                    bar.update(writer.add(batch, found))
        finally:
            stop_reader()
    return 0


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Use `threads` CPU threads (0: leave torch's setting) and restore the setting afterwards, since
    ``main`` may run in-process (tests, scripts)."""
    before = torch.get_num_threads()
    if threads > 0:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _progress(enabled: bool):
    from tqdm import tqdm

    return tqdm(disable=not enabled, unit=" lines", file=sys.stderr, dynamic_ncols=True, mininterval=0.5)
