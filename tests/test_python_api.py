"""`nmt.Translator` validates like the CLI: docs/translating.md#from-python.

- One str where a sequence of lines belongs (``translate("A dog runs.")``) is a TypeError that says so: iterated,
  it would give one translation per character.
- An item that is not a str (1, None) is a TypeError naming its index.
- A number the CLI refuses is refused with the same reason (`nmt.limits`, the ranges of the options).

Every public entry point of `Translator` is in `CALLS`; a new one fails `test_every_entry_point_is_covered` until
its hostile calls are added.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from nmt.decoding import SearchConfig
from nmt.inference import Translator
from nmt.scoring.scorer import ScoringConfig
from tests.factories import multi30k_lines, tiny_checkpoint

LINE = multi30k_lines("test_2016_flickr", "en", 1)[0]
ONE_STR = "must be a sequence of lines (a list of str), not one str"


@pytest.fixture(scope="module")
def translator(tmp_path_factory) -> Translator:
    return Translator.load(tiny_checkpoint(tmp_path_factory.mktemp("ckpt"), architecture="rnnsearch"), device="cpu")


def run(call):
    """Call, and drain what it returns when it is a generator (a stream checks its items as it reaches them)."""
    result = call()
    return list(result) if inspect.isgenerator(result) else result


# entry point -> [(call, exception, message)]
CALLS = {
    "translate": [
        (lambda t: t.translate("A dog runs."), TypeError, f"lines {ONE_STR}: for one line pass [line]"),
        (lambda t: t.translate([LINE, 1]), TypeError, "lines[1] must be a str, not int 1"),
        (lambda t: t.translate([None]), TypeError, "lines[0] must be a str, not NoneType None"),
        (lambda t: t.translate([LINE], max_input_tokens=-3), ValueError, "max_input_tokens: -3 is less than 1"),
        (lambda t: t.translate([LINE], batch_tokens=0), ValueError, "batch_tokens: 0 is less than 1"),
        (lambda t: t.translate([LINE], {"beam_size": 2}), TypeError, "search must be a SearchConfig or None"),
    ],
    "translate_batches": [
        (lambda t: t.translate_batches("A dog runs."), TypeError, f"lines {ONE_STR}"),
        (lambda t: t.translate_batches([LINE], max_input_tokens=1001), ValueError, "max_input_tokens: 1001 is more"),
    ],
    "translate_sources": [
        (lambda t: t.translate_sources("A dog."), TypeError, f"sources {ONE_STR}"),
        (lambda t: t.translate_sources(["A dog."]), TypeError, "sources[0] must be a nmt.data.encoding.Source"),
        (lambda t: t.translate_sources([], batch_tokens=-1), ValueError, "batch_tokens: -1 is less than 1"),
    ],
    "score": [
        (lambda t: t.score("A dog.", "Chien."), TypeError, f"sources {ONE_STR}"),
        (lambda t: t.score([LINE], "Chien."), TypeError, f"targets {ONE_STR}"),
        (lambda t: t.score([LINE, None], ["a", "b"]), TypeError, "sources[1] must be a str, not NoneType"),
        (lambda t: t.score([LINE], ["a", "b"]), ValueError, "1 sources but 2 targets"),
    ],
    "scorer": [
        (lambda t: t.scorer().score("A dog.", "Chien."), TypeError, f"inputs {ONE_STR}"),
        (lambda t: t.scorer(ScoringConfig(max_len=1)), ValueError, "max_len: 1 is less than 2"),
        (lambda t: t.scorer(ScoringConfig(floor=float("nan"))), ValueError, "floor: nan is not a finite number"),
    ],
    "encode": [
        (lambda t: t.encode("a red car"), TypeError, f"phrases {ONE_STR}: for one line pass [phrase]"),
        (lambda t: t.encode(["a red car", 1]), TypeError, "phrases[1] must be a str, not int 1"),
        (lambda t: t.encode([LINE], vector="first"), ValueError, "vector must be 'ends' or 'mean'"),
    ],
    "encode_stream": [
        (lambda t: t.encode_stream("a red car"), TypeError, f"phrases {ONE_STR}"),
        (lambda t: t.encode_stream(iter([LINE, b"x"])), TypeError, "phrases[1] must be a str, not bytes"),
        (lambda t: t.encode_stream([LINE], window=0), ValueError, "window: 0 is less than 1"),
        (lambda t: t.encode_stream([LINE], max_input_tokens=-3), ValueError, "max_input_tokens: -3 is less than 1"),
    ],
    "attention": [
        (lambda t: t.attention([LINE]), TypeError, "src must be a str (one sentence), not list"),
        (lambda t: t.attention(LINE, 3), TypeError, "tgt must be a str (one sentence), not int"),
        (lambda t: t.attention(LINE, beam_size=0), ValueError, "beam_size: 0 is less than 1"),
    ],
    "check_beam_size": [],  # takes a beam checked by SearchConfig; it refuses one wider than the vocabulary
    "load": [(lambda t: Translator.load(Path("x.ckpt"), dtype="float64"), ValueError, "dtype must be one of")],
    "load_shortlist": [],  # reads a file: the table's own checks (tests/test_shortlist.py)
    "require_attention": [],  # no user input
    "has_attention": [],  # a property
}


def test_every_entry_point_is_covered():
    public = {name for name, _ in inspect.getmembers(Translator) if not name.startswith("_")}
    assert public == set(CALLS), "add the new entry point's hostile calls to CALLS"


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        pytest.param(call, error, message, id=f"{entry}-{i}")
        for entry, calls in CALLS.items()
        for i, (call, error, message) in enumerate(calls)
    ],
)
def test_a_hostile_call_is_refused_with_a_reason(translator, call, error, message):
    with pytest.raises(error, match=re.escape(message)):
        run(lambda: call(translator))


def test_the_cli_and_the_api_refuse_the_same_values(translator):
    """`--max-input-tokens -3` and `max_input_tokens=-3` give the same reason: one Range (`nmt.limits.PIECES`)."""
    from nmt.commands.translate import build_parser
    from nmt.errors import InputError

    with pytest.raises(InputError) as cli:
        build_parser().parse_args(["--checkpoint", "x", "--max-input-tokens", "-3"])
    with pytest.raises(ValueError) as api:
        run(lambda: translator.translate([LINE], max_input_tokens=-3))
    assert str(api.value) == f"max_input_tokens: {cli.value.message}"


def test_a_list_of_one_line_is_one_translation(translator):
    assert len(list(translator.translate([LINE], SearchConfig(beam_size=1)))) == 1
    assert len(translator.score([LINE], [LINE]).logprob) == 1
    assert translator.encode([LINE]).shape[0] == 1
