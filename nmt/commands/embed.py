"""``nmt embed``: the encoder's representation of each phrase (Cho et al. 2014 §4.4, Figs. 4–5), for analysis.

    nmt embed --checkpoint M.ckpt --input phrases.txt --output vectors.npy [--plot map.png]

Row i of the float32 ``.npy`` matrix is the vector of line i of the input (one phrase a line, Moses
escapes kept as written unless ``--unescape``):

- RNN Encoder–Decoder: the summary c = tanh(V h_T) (Cho A.1), the vector the decoder is conditioned on.
- RNNsearch has no single summary. ``--rnnsearch-vector ends`` (default) is [→h_T; ←h_1], the last state of
  each direction: the forward state after the whole phrase (EOS included) and the backward state at the
  first word, the one the decoder starts from (s_0 = tanh(W_s ←h_1)). ``mean`` is the mean annotation
  (1/T) Σ_j h_j over the phrase's pieces, EOS included.

``--plot`` projects a sample of at most ``--plot-points`` rows to 2-D and labels ``--labels`` of them with
their phrase, like Cho's Fig. 4, placing the labels where they overlap no other label. ``--projection pca``
(default): the top two right singular vectors of the centred matrix, by numpy's SVD; each axis title gives
its share of the variance. ``--projection tsne``: t-SNE, as Cho et al. used, by scikit-learn (``pip install
'nmt[tsne]'``); its axes have no units, only its neighbourhoods mean something.
"""

from __future__ import annotations

import io
import random
import shutil
import sys
import tempfile
from collections.abc import Iterable
from contextlib import ExitStack
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.lib.format
from jsonargparse import ArgumentParser

from nmt.commands import options
from nmt.commands.options import CommandParser, Range
from nmt.errors import InputError
from nmt.inference import Translator
from nmt.moses import unescape
from nmt.plotting import LABEL_CHARS, phrase_map, require_tsne, save_figure, supported_formats
from nmt.textio import atomic_output, check_input, check_output, read_lines

PROG = "nmt embed"


def build_parser() -> ArgumentParser:
    p = CommandParser(prog=PROG, description=__doc__.split("\n\n")[0])
    options.add_model_arguments(p, ensemble=False)
    p.add_argument(
        "--input", required=True, metavar="FILE", help="phrases in the model's source language, one a line ('-': stdin)"
    )
    p.add_argument("--output", required=True, metavar="FILE", help="the vectors, a float32 .npy file (N, D)")
    p.add_argument(
        "--rnnsearch-vector",
        type=Literal["ends", "mean"],
        default="ends",
        help="RNNsearch: [→h_T; ←h_1] (ends) or the mean annotation",
    )
    p.add_argument("--unescape", action="store_true", help="undo Moses escapes (&apos;) before encoding")
    p.add_argument("--plot", default=None, metavar="FILE", help="also draw a 2-D map of the phrases (PNG, PDF, SVG)")
    p.add_argument(
        "--projection",
        type=Literal["pca", "tsne"],
        default="pca",
        help="the map's projection: PCA, or t-SNE as in Cho et al. (needs pip install 'nmt[tsne]'; slower)",
    )
    p.add_argument(
        "--labels",
        type=options.count(0, options.MAX_PLOT_POINTS),
        default=40,
        help="points of the map labelled with their phrase",
    )
    p.add_argument(
        "--plot-points",
        type=options.count(1, options.MAX_PLOT_POINTS, why_high="held in memory and drawn one by one"),
        default=5000,
        help="points drawn (a uniform sample when more)",
    )
    options.add_runtime_arguments(p, batch_tokens=4000)
    options.add_input_arguments(p, doing="embedded")
    p.add_argument("--seed", type=Range(int), default=0, help="seed of the plotted and labelled sample")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.output.endswith(".npy"):
        raise InputError(path=args.output, message="the output is a NumPy .npy file; name it *.npy")
    if args.plot and (suffix := Path(args.plot).suffix.lstrip(".").lower()) not in supported_formats():
        raise InputError(path=args.plot, message=f"unknown figure format {suffix!r}; use .png, .pdf or .svg")
    if args.plot and args.projection == "tsne":
        require_tsne()  # before the model is loaded and the phrases embedded
    inputs = [args.input, args.checkpoint]
    check_input(args.input)  # all before the model is loaded
    check_output(args.output, inputs)
    check_output(args.plot, inputs)
    rng = random.Random(args.seed)
    sample: list[tuple[int, str, np.ndarray]] = []  # reservoir of (row, phrase, vector) for the plot
    texts = [] if args.plot else None  # the phrases of the block being embedded, for the plot's labels
    with options.torch_threads(args.threads):
        translator = Translator.load(args.checkpoint, device=args.device, dtype=args.dtype)
        lines = (text for text, _ in read_lines(args.input, errors=args.encoding_errors))
        read = _remembered(lines, texts)  # the lines as written label the plot
        phrases = (unescape(t) for t in read) if args.unescape else read
        n = 0
        with NpyRowWriter(args.output, inputs=inputs) as writer:
            blocks = translator.encode_stream(
                phrases,
                vector=args.rnnsearch_vector,
                batch_tokens=args.batch_tokens,
                max_input_tokens=args.max_input_tokens,
                source_name=args.input,
                warning_prefix=f"{PROG}: warning",
            )
            for vectors in blocks:
                writer.write(vectors)
                if texts is not None:
                    for text, vector in zip(texts, vectors, strict=True):
                        if len(sample) < args.plot_points:
                            sample.append((n, text, vector))
                        elif (k := rng.randrange(n + 1)) < args.plot_points:
                            sample[k] = (n, text, vector)
                        n += 1
                    texts.clear()
                else:
                    n += len(vectors)
            if n == 0:
                raise InputError(path=args.input, message="no phrases to embed (the input is empty)")
    print(f"{PROG}: {n:,} phrases -> {args.output} {(n, writer.dim)}", file=sys.stderr)
    if args.plot:  # from the sample's own vectors: the output may be a pipe or a device, not to be read back
        sample.sort(key=lambda entry: entry[0])
        vectors = np.stack([vector for _, _, vector in sample])
        texts = [text for _, text, _ in sample]
        figure = phrase_map(vectors, texts, labels=args.labels, rng=rng, projection=args.projection)
        save_figure(figure, args.plot, dpi=120)
        asked = min(args.labels, len({text[:LABEL_CHARS] for text in texts}))  # each distinct label once
        drawn = len(figure.axes[0].texts)
        left_out = f", {asked - drawn:,} left out: no room without overlapping" if drawn < asked else ""
        method = "PCA" if args.projection == "pca" else "t-SNE"
        print(
            f"{PROG}: {method} map of {len(sample):,} phrases ({drawn:,} labelled{left_out}) -> {args.plot}",
            file=sys.stderr,
        )
    return 0


def _remembered(phrases: Iterable[str], texts: list[str] | None) -> Iterable[str]:
    """`phrases`, each also appended to `texts` (when given) as it is read."""
    for text in phrases:
        if texts is not None:
            texts.append(text)
        yield text


class NpyRowWriter:
    """Writes a float32 (N, D) ``.npy`` file row block by row block, N unknown in advance: numpy's header
    (`numpy.lib.format`, which leaves room for N to grow) is written first and rewritten in place with the
    final N and D on close, so the file is byte for byte what ``numpy.save`` writes for the whole matrix.
    Memory stays one block. The file is written by `atomic_output` (a unique temporary name, renamed when
    complete); an output that cannot seek (a FIFO, a terminal) gets the rows spooled to an anonymous temporary
    file, then header and rows in one go."""

    def __init__(self, path: str, *, inputs: Iterable[str | None] = ()) -> None:
        self.path, self.inputs, self.dim, self.rows = path, list(inputs), None, 0

    def __enter__(self) -> NpyRowWriter:
        self._stack = ExitStack()
        with self._stack:  # closed here only if entering fails
            self._out = self._stack.enter_context(atomic_output(self.path, inputs=self.inputs, binary=True))
            seekable = self._out.seekable()
            self.file = self._out if seekable else self._stack.enter_context(tempfile.TemporaryFile())
            self.file.write(self._header())
            self._stack = self._stack.pop_all()
        return self

    def write(self, block: np.ndarray) -> None:
        if self.dim is None:
            self.dim = block.shape[1]
        self.file.write(np.ascontiguousarray(block, dtype="<f4").tobytes())
        self.rows += block.shape[0]

    def _header(self) -> bytes:
        """The version 1.0 header of the rows so far. Its length does not change as N and D grow: numpy pads
        it to a multiple of 64 bytes with room for a 21-digit N."""
        header = io.BytesIO()
        shape = (self.rows, self.dim or 0)
        numpy.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": shape})
        return header.getvalue()

    def _finish(self) -> None:
        self.file.seek(0)
        self.file.write(self._header())
        if self.file is not self._out:
            self.file.seek(0)
            shutil.copyfileobj(self.file, self._out)

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, traceback: object) -> bool:
        if kind is None:
            try:
                self._finish()
            except BaseException:
                if not self._stack.__exit__(*sys.exc_info()):
                    raise
                return False
        return bool(self._stack.__exit__(kind, error, traceback))
