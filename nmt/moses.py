"""The Moses text formats: phrase-table and n-best lines, parsed and rewritten byte for byte; Moses escapes;
feature weights (moses.ini) and an n-best list re-ranked by them (`Reranker`). No model here: training data
(``nmt.data.phrase_table``) and scoring (``nmt score``) both read these files, and this module imports only
``nmt.errors``.

A line is kept as the bytes it was read as (line end included). Parsing only finds *where* the fields
are; writing splices new bytes in at those offsets, so every other byte of the line — odd spacing, a
trailing ``|||``, ``\\r\\n``, Moses escapes, bytes that are not UTF-8 in fields we do not read — comes out
unchanged.

Phrase table (Moses ``train-model.perl`` step 6, and the older 3-field tables)::

    src ||| tgt ||| scores [||| alignment [||| counts [||| …]]]

A new score goes after the last value of the scores field, with one space before it, so
``"||| 0.5 0.2 ||| "`` becomes ``"||| 0.5 0.2 NEW ||| "`` and ``"||| 0.5 2.718\\n"`` becomes
``"||| 0.5 2.718 NEW\\n"``.

N-best list (Moses ``-n-best-list``; the formats of 2008, 2012 and later)::

    id ||| hypothesis ||| features ||| total [||| alignment …]

``features`` is a run of labels and values, labels written ``Name=`` (modern: ``TranslationModel0= …``,
older: ``tm= …``) or ``name:`` (about 2008: ``tm: …``). A new feature is written in the list's own label
style, after the last value.

Moses escapes (``&amp; &#124; &lt; &gt; &apos; &quot; &#91; &#93;``) stay in the output as they were; only
the text handed to a model is unescaped (`unescape`).

A line is malformed (`MalformedLine`: an error naming it, or copied through with ``--skip-malformed``) when it
lacks a field, holds a NUL byte, or has a score, feature value or total that is not a number: Moses would
fail on it later, far from the cause.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import IO

from nmt.errors import InputError

SEPARATOR = b"|||"
_BOM = b"\xef\xbb\xbf"


class MalformedLine(InputError):
    """A line without the fields its format needs (``--skip-malformed`` copies such lines through)."""


_ESCAPES = {
    "&amp;": "&",
    "&#124;": "|",
    "&lt;": "<",
    "&gt;": ">",
    "&apos;": "'",
    "&quot;": '"',
    "&#91;": "[",
    "&#93;": "]",
}
_ESCAPE_RE = re.compile("|".join(re.escape(e) for e in _ESCAPES))


def unescape(text: str) -> str:
    """Undo Moses' ``escape-special-chars.perl`` (exactly its 8 entities, nothing else): ``&apos;`` -> ``'``."""
    return _ESCAPE_RE.sub(lambda m: _ESCAPES[m.group(0)], text) if "&" in text else text


def format_value(value: float, digits: int = 6) -> str:
    """A score as Moses writes them: ``%g`` with `digits` significant digits (``1.36502e-05``, ``-12.3457``)."""
    return f"{value:.{digits}g}"


def _content_end(line: bytes, start: int, end: int) -> int:
    """Offset just after the last non-whitespace byte of line[start:end] (start when it is all blank)."""
    return start + len(line[start:end].rstrip())


def _field_bounds(line: bytes, maxsplit: int) -> list[tuple[int, int]]:
    """(start, end) of the first fields of `line` between ``|||`` separators (at most maxsplit + 1 fields;
    the last one runs to the end of the line)."""
    bounds, start = [], 0
    for _ in range(maxsplit):
        sep = line.find(SEPARATOR, start)
        if sep < 0:
            break
        bounds.append((start, sep))
        start = sep + len(SEPARATOR)
    bounds.append((start, len(line)))
    return bounds


def _decode(field: bytes, *, path: str, number: int, errors: str) -> str:
    try:
        return field.decode("utf-8", errors=errors)
    except UnicodeDecodeError as error:
        raise InputError(
            path=path,
            line=number,
            message=f"invalid UTF-8 at byte {error.start + 1} of a field "
            "(--encoding-errors replace substitutes U+FFFD)",
        ) from None


def splice(line: bytes, at: int, text: str) -> bytes:
    """Insert " " + text into line at byte offset `at`."""
    return b"%s %s%s" % (line[:at], text.encode(), line[at:])


@dataclass(frozen=True, slots=True)
class PhrasePair:
    """One phrase-table line: its raw bytes, the two phrases as text, and where a new score goes."""

    raw: bytes
    src: str  # field 1, stripped, UTF-8 decoded, Moses escapes kept
    tgt: str  # field 2, likewise
    insert_at: int  # byte offset just after the last value of the scores field

    def with_scores(self, values: Iterable[str]) -> bytes:
        """The original line with `values` appended to its scores field."""
        return splice(self.raw, self.insert_at, " ".join(values))


def parse_phrase_line(line: bytes, *, path: str, number: int, errors: str = "strict") -> PhrasePair:
    """Parse one phrase-table line (with its line end). Raises InputError for fewer than 3 fields or, with
    errors="strict", for a phrase that is not UTF-8."""
    bounds = _field_bounds(line, 3)
    if len(bounds) < 3:
        raise MalformedLine(
            path=path,
            line=number,
            message=f"malformed phrase-table line: {len(bounds)} field(s), expected at least 3 "
            "('src ||| tgt ||| scores …')",
        )
    (s0, s1), (t0, t1), (f0, f1) = bounds[0], bounds[1], bounds[2]
    _check_no_nul(line, path=path, number=number)
    for token in line[f0:f1].split():
        _check_number(token, "score", path=path, number=number)
    if number == 1 and line.startswith(_BOM):
        s0 += len(_BOM)
    return PhrasePair(
        raw=line,
        src=_decode(line[s0:s1].strip(), path=path, number=number, errors=errors),
        tgt=_decode(line[t0:t1].strip(), path=path, number=number, errors=errors),
        insert_at=_content_end(line, f0, f1),
    )


# -- n-best lists ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NBestEntry:
    """One n-best line: the sentence id, the hypothesis text, and where its features and total are."""

    raw: bytes
    sentence_id: int
    text: str  # the hypothesis, stripped, Moses escapes kept
    features: tuple[int, int]  # byte span of the features field
    total: tuple[int, int]  # byte span of the total score's text (the number itself, no blanks)
    label_suffix: str  # "=" (Name= …) or ":" (name: …): the style of this list's labels

    def feature_values(self, *, path: str, number: int) -> dict[str, list[float]]:
        """The features as {label: values}, labels without their "=" / ":" (a repeated label's values are
        concatenated, in order)."""
        return parse_labelled_values(
            self.raw[self.features[0] : self.features[1]].decode("utf-8", "replace"), path=path, number=number
        )

    def has_label(self, label: str) -> bool:
        """Whether the features field already holds `label` (``label=`` or ``label:``)."""
        tokens = self.raw[self.features[0] : self.features[1]].split()
        return f"{label}=".encode() in tokens or f"{label}:".encode() in tokens

    def rewrite(self, features: Iterable[tuple[str, str]], total: str | None = None) -> bytes:
        """The original line with ``label<suffix> value`` for each new feature appended to the features field,
        and the total replaced when one is given."""
        at = _content_end(self.raw, *self.features)
        new = " ".join(f"{label}{self.label_suffix} {value}" for label, value in features).encode()
        if total is None:
            return b"%s %s%s" % (self.raw[:at], new, self.raw[at:])
        t0, t1 = self.total
        return b"%s %s%s%s%s" % (self.raw[:at], new, self.raw[at:t0], total.encode(), self.raw[t1:])


def parse_nbest_line(line: bytes, *, path: str, number: int, errors: str = "strict") -> NBestEntry:
    """Parse one n-best line (with its line end). Raises InputError for a line that is not
    ``id ||| hypothesis ||| features ||| total …`` or whose id is not an integer."""
    bounds = _field_bounds(line, 4)
    if len(bounds) < 4:
        raise MalformedLine(
            path=path,
            line=number,
            message=f"malformed n-best line: {len(bounds)} field(s), expected at least 4 "
            "('id ||| hypothesis ||| features ||| total')",
        )
    (i0, i1), (h0, h1), (f0, f1), (t0, t1) = bounds[:4]  # fields after the total (alignment …) stay as they are
    _check_no_nul(line, path=path, number=number)
    if number == 1 and line.startswith(_BOM):
        i0 += len(_BOM)
    try:
        sentence_id = int(line[i0:i1])
    except ValueError:
        raise MalformedLine(
            path=path, line=number, message=f"n-best sentence id {line[i0:i1].strip()[:20]!r} is not an integer"
        ) from None
    for token in line[f0:f1].split():
        if not (token.endswith((b"=", b":")) and len(token) > 1):  # a label, or else a value
            _check_number(token, "feature value", path=path, number=number)
    total_field = line[t0:t1]
    stripped = total_field.lstrip()
    start = t0 + len(total_field) - len(stripped)
    token = stripped.split(None, 1)[0] if stripped.strip() else b""
    _check_number(token, "total score", path=path, number=number)
    first_label = line[f0:f1].split(None, 1)[0] if line[f0:f1].strip() else b""
    return NBestEntry(
        raw=line,
        sentence_id=sentence_id,
        text=_decode(line[h0:h1].strip(), path=path, number=number, errors=errors),
        features=(f0, f1),
        total=(start, start + len(token)),
        label_suffix=":" if first_label.endswith(b":") else "=",
    )


def _check_no_nul(line: bytes, *, path: str, number: int) -> None:
    if b"\x00" in line:
        raise MalformedLine(path=path, line=number, message=f"NUL byte at byte {line.index(0) + 1} of the line")


def _check_number(token: bytes, what: str, *, path: str, number: int) -> None:
    try:
        float(token)
    except ValueError:
        problem = f"{what} {token[:20].decode('utf-8', 'replace')!r} is not a number" if token else f"no {what}"
        raise MalformedLine(path=path, line=number, message=problem) from None


def parse_labelled_values(text: str, *, path: str, number: int | None) -> dict[str, list[float]]:
    """``"d= 0 -3.3 lm= -47.2"`` (or ``"d: 0 -3.3 lm: -47.2"``) -> {"d": [0.0, -3.3], "lm": [-47.2]}."""
    values: dict[str, list[float]] = {}
    label: str | None = None
    for token in text.split():
        if token.endswith(("=", ":")) and len(token) > 1:
            label = token[:-1]
            values.setdefault(label, [])
            continue
        try:
            value = float(token)
        except ValueError:
            raise InputError(path=path, line=number, message=f"{token!r} is neither a label nor a number") from None
        if label is None:
            raise InputError(path=path, line=number, message=f"value {token} comes before any label")
        values[label].append(value)
    return values


def read_weights(path: str) -> dict[str, list[float]]:
    """Feature weights from a moses.ini (its ``[weight]`` section) or a file of ``Name= w1 w2 …`` lines.

    Lines starting with ``#`` and blank lines are ignored. Old-style moses.ini sections
    (``[weight-d]``, ``[weight-t]`` …) are not read: list those weights as ``d= …`` lines instead.
    """
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as error:
        raise InputError(path=path, message=f"cannot read weights: {error.strerror or error}") from None
    except UnicodeDecodeError:
        raise InputError(path=path, message="weights file is not UTF-8") from None
    has_sections = any(line.strip().startswith("[") for line in lines)
    section = None
    weights: dict[str, list[float]] = {}
    for number, line in enumerate(lines, start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line
            continue
        if has_sections and section != "[weight]":
            continue
        for label, values in parse_labelled_values(line, path=path, number=number).items():
            weights.setdefault(label, []).extend(values)
    if not weights:
        raise InputError(path=path, message="no weights found (expected 'Name= w …' lines or a [weight] section)")
    return weights


def weighted_total(
    features: dict[str, list[float]], weights: dict[str, list[float]], *, path: str, number: int
) -> float:
    """Σ_k w_k·f_k over every feature of a hypothesis. Every label needs a weight per value."""
    total = 0.0
    for label, values in features.items():
        w = weights.get(label)
        if w is None:
            raise InputError(path=path, line=number, message=f"no weight for feature {label!r}")
        if len(w) != len(values):
            raise InputError(
                path=path, line=number, message=f"feature {label!r} has {len(values)} value(s) but {len(w)} weight(s)"
            )
        total += math.fsum(a * b for a, b in zip(w, values, strict=True))
    return total


class Reranker:
    """Writes n-best hypotheses with their new features. With weights, holds one sentence's hypotheses (its run
    of consecutive lines: the caller refuses a list whose ids are not grouped) and writes them best first by the
    new total, a malformed line copied through among them keeping its place; without, writes each line at
    once."""

    def __init__(self, out: IO[bytes], weights: dict[str, list[float]] | None, *, path: str) -> None:
        self.out, self.weights, self.path = out, weights, path
        self.group: list[tuple[float, bytes] | bytes] = []  # (total, line) of a hypothesis, or a malformed line
        self.sentence_id: int | None = None

    def copy(self, raw: bytes) -> None:
        """A malformed line, copied through in its place."""
        if self.group:
            self.group.append(raw)
        else:
            self.out.write(raw)

    def add(self, number: int, hyp: NBestEntry, new: dict[str, str], digits: int) -> None:
        """`new`: the new features' values as they are written (the total is computed from those)."""
        if self.weights is None:
            self.out.write(hyp.rewrite(new.items()))
            return
        if hyp.sentence_id != self.sentence_id:
            self.flush()
            self.sentence_id = hyp.sentence_id
        features = hyp.feature_values(path=self.path, number=number)
        features.update({label: [float(value)] for label, value in new.items()})
        total = weighted_total(features, self.weights, path=self.path, number=number)
        self.group.append((total, hyp.rewrite(new.items(), format_value(total, digits))))

    def flush(self) -> None:
        hypotheses = [entry for entry in self.group if isinstance(entry, tuple)]
        ranked = iter(sorted(hypotheses, key=lambda entry: -entry[0]))  # stable: ties keep their order
        for entry in self.group:  # the hypotheses' places get them best first; malformed lines stay in theirs
            self.out.write(next(ranked)[1] if isinstance(entry, tuple) else entry)
        self.group, self.sentence_id = [], None
