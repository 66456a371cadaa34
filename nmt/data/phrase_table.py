"""A Moses phrase table as training data: its unique (source, target) phrase pairs (Cho et al. 2014 §4.1.1).

The paper trains the RNN Encoder–Decoder on the phrase table's pairs with their frequencies ignored, each
unique pair sampled uniformly, so that the model learns to translate rather than to rank by counts. The
table is streamed into an Arrow file by `Dataset.from_generator` (never a Python list), each pair with a
128-bit hash; duplicates are found by sorting the hashes (numpy, 16 bytes a pair) and the first occurrence
of each pair is kept, in table order.

The text of each phrase is its field stripped of surrounding blanks, with Moses escapes undone
(``&apos;`` -> ``'``), as `nmt score` gives it to the model.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import datasets
import numpy as np
from datasets.exceptions import DatasetGenerationError

from nmt.errors import InputError, find_input_error
from nmt.moses import parse_phrase_line, unescape
from nmt.textio import file_signature, read_binary_lines

__all__ = ["load_phrase_table_pairs"]

_FEATURES = datasets.Features(
    {
        "src": datasets.Value("string"),
        "tgt": datasets.Value("string"),
        "hash_hi": datasets.Value("int64"),
        "hash_lo": datasets.Value("int64"),
    }
)


def load_phrase_table_pairs(
    path: str | os.PathLike[str], *, cache_dir: str | os.PathLike[str], swap: bool = False
) -> datasets.Dataset:
    """The unique phrase pairs of a Moses phrase table (plain or .gz) as a Dataset with ``src``, ``tgt``.

    Args:
        path: the phrase table (``src ||| tgt ||| scores …``, 3 or more fields).
        cache_dir: where the Arrow files go; keyed by the table's path, size and mtime.
        swap: make the table's target side ``src`` (to train a model of p(source phrase | target phrase)).

    Raises InputError (file and line) for a line with fewer than 3 fields or a phrase that is not UTF-8.
    """
    path = Path(path)
    signature = file_signature(path)
    lines = read_binary_lines(os.fspath(path))
    empty = next(lines, None) is None
    lines.close()
    if empty:  # `datasets` cannot make a table of no rows
        raise InputError(path=path, message="no phrase pairs: the table is empty")
    try:
        table = datasets.Dataset.from_generator(
            _pairs,
            features=_FEATURES,
            cache_dir=os.fspath(cache_dir),
            gen_kwargs={"path": os.fspath(path), "swap": swap, "signature": signature},
        )
    except DatasetGenerationError as error:
        cause = find_input_error(error)
        if cause is None:
            raise
        raise cause from None
    hi = table.data.column("hash_hi").to_numpy()
    lo = table.data.column("hash_lo").to_numpy()
    order = np.lexsort((lo, hi))  # stable: equal pairs stay in table order, the first one leads its run
    first = np.ones(len(order), dtype=bool)
    first[1:] = (hi[order[1:]] != hi[order[:-1]]) | (lo[order[1:]] != lo[order[:-1]])
    keep = np.sort(order[first])
    unique = table if len(keep) == len(table) else table.select(keep)
    return unique.select_columns(["src", "tgt"])


def _pairs(path: str, swap: bool, signature: object) -> Iterator[dict]:
    """Yield every pair of the table with its hash. `signature` only keys the Arrow cache."""
    del signature
    for number, raw in enumerate(read_binary_lines(path), start=1):
        pair = parse_phrase_line(raw, path=path, number=number)
        src, tgt = unescape(pair.src), unescape(pair.tgt)
        if swap:
            src, tgt = tgt, src
        digest = hashlib.blake2b(f"{src}\x00{tgt}".encode(), digest_size=16).digest()
        yield {
            "src": src,
            "tgt": tgt,
            "hash_hi": int.from_bytes(digest[:8], "little", signed=True),
            "hash_lo": int.from_bytes(digest[8:], "little", signed=True),
        }
