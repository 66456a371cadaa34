"""What the server accepts: one pydantic model per request body, and bad requests as one `ApiError` naming the
field (``q[3]: Input should be a valid string``).

The LibreTranslate request (`LibreTranslateRequest`) takes what LibreTranslate takes, as JSON or as a form
(its Python client sends forms), and ignores fields it does not use (``api_key``). The ``/v1`` requests refuse
unknown fields, so a misspelt option is an error rather than silently the default. Nothing in a request names
a file or a class: a request can only choose among the settings below, within the server's limits.
"""

from __future__ import annotations

from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

M = TypeVar("M", bound=BaseModel)


class ApiError(Exception):
    """A request the server refuses: HTTP `status`, the `field` at fault and what is wrong with it."""

    def __init__(self, status: int, field: str, message: str) -> None:
        # A request can put a lone surrogate ("\\ud800") in a field's name or value: escaped, so that the answer
        # is UTF-8.
        field, message = _printable(field), _printable(message)
        super().__init__(f"{field}: {message}")
        self.status = status
        self.field = field
        self.message = message

    def body(self) -> dict:
        return {"error": str(self), "field": self.field}


def _printable(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


Text = str | list[str]


class LibreTranslateRequest(BaseModel):
    """``POST /translate``, as LibreTranslate defines it."""

    model_config = ConfigDict(extra="ignore")

    q: Text
    source: str
    target: str
    format: Literal["text"] = "text"
    alternatives: int = Field(default=0, ge=0, description="further translations of each text, best first")
    api_key: str | None = None  # accepted and ignored: this server has no keys


class TranslateRequest(BaseModel):
    """``POST /v1/translate``: the `nmt translate` options a client may choose per request."""

    model_config = ConfigDict(extra="forbid")

    q: Text
    beam_size: int | None = Field(default=None, ge=1)
    n_best: int = Field(default=1, ge=1)
    length_penalty: Literal["none", "length", "gnmt"] | None = None
    alpha: float | None = Field(default=None, ge=0.0, le=10.0)
    scores: bool = False
    alignment: bool = False


class ScoreRequest(BaseModel):
    """``POST /v1/score``: log p(target | source) of sentence (or phrase) pairs."""

    model_config = ConfigDict(extra="forbid")

    source: list[str]
    target: list[str]


def validated(model: type[M], data: object) -> M:
    """`data` as a `model`, or an `ApiError` (400) naming the first field at fault."""
    if not isinstance(data, dict):
        raise ApiError(400, "body", f"expected a JSON object, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as e:
        errors = e.errors()
        field = errors[0]["loc"][:1]
        # A union (q: a string or a list of strings) fails once per branch: report the most precise failure.
        branches = [x for x in errors if x["loc"][:1] == field]
        worst = max(branches, key=lambda x: len(x["loc"]))
        message = worst["msg"].removeprefix("Value error, ")
        if len(branches) > 1 and len(worst["loc"]) == 2:  # neither branch got further than the value's type
            message = "should be a string or a list of strings"
        raise ApiError(400, field_name(worst["loc"]) or "body", message) from None


_UNION_BRANCHES = {"str", "list[str]"}


def field_name(loc: tuple) -> str:
    """pydantic's location ("q", "list[str]", 3) as ``q[3]`` (the union branch it tried left out)."""
    name = ""
    for part in loc:
        if isinstance(part, int):
            name += f"[{part}]"
        elif part not in _UNION_BRANCHES:
            name += f".{part}" if name else str(part)
    return name
