"""A request's body, from its bytes to its fields: the one way every endpoint reads one.

    bytes ──read──▶ at most --max-request-bytes (413), within --body-timeout (408), while the server is not
                    stopping (503); a client that closes mid-body gets no answer (its status is 499, as nginx
                    logs it)
          ──UTF-8──▶ strictly (a UTF-8 BOM dropped): UTF-16, UTF-32 and invalid bytes are 400 `body`
          ──nesting──▶ JSON nested deeper than MAX_NESTING levels is 400 `body`, before the parser sees it
          ──parse──▶ JSON integers of more than MAX_DIGITS digits are 400 `body` (Python's int limit is not a 500)
          ──fields──▶ a JSON object, or a form (LibreTranslate's clients send forms)

Every refusal is an `ApiError` naming ``body``; the handlers then check the fields (`nmt.serving.schemas`).
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from urllib.parse import parse_qsl

import numpy as np
from starlette.requests import ClientDisconnect, Request

from nmt.serving.schemas import ApiError

MAX_NESTING = 32  # levels of JSON arrays and objects; every request's own fields need 2
MAX_FORM_FIELDS = 1000  # as starlette's multipart parser
MAX_DIGITS = 100  # of a JSON integer (Python refuses to convert more than 4,300: a ValueError, not a JSON error)
_POLL_SECONDS = 0.1  # how often a body still arriving looks at the time limit and at a stopping server
_FORMS = ("application/x-www-form-urlencoded", "multipart/form-data")
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)  # a string, its escapes included
_DEPTH_STEP = np.zeros(256, dtype=np.int64)  # what each byte does to the nesting depth
_DEPTH_STEP[list(b"[{")], _DEPTH_STEP[list(b"]}")] = 1, -1


async def read_body(request: Request, *, limit: int, timeout: float, stopping: threading.Event) -> bytes:
    """The body's bytes: at most `limit`, within `timeout` seconds, unless the server starts stopping first."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "body", f"{declared} bytes; at most {limit} per request (--max-request-bytes)")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    raw = bytearray()
    chunks = request.stream()
    while True:
        arriving = asyncio.ensure_future(anext(chunks, None))
        while not arriving.done():
            await asyncio.wait({arriving}, timeout=min(_POLL_SECONDS, max(0.0, deadline - loop.time())))
            if arriving.done():
                break
            if stopping.is_set():
                arriving.cancel()
                raise ApiError(503, "body", "the server is stopping; send the request again")
            if loop.time() >= deadline:
                arriving.cancel()
                raise ApiError(408, "body", f"not received within {timeout:g} s (--body-timeout)")
        try:
            chunk = arriving.result()
        except ClientDisconnect:  # nobody to answer; the status is for the metrics and the access log
            raise ApiError(499, "body", "the client closed the connection before sending all of it") from None
        if chunk is None:
            return bytes(raw)
        raw += chunk
        if len(raw) > limit:
            raise ApiError(413, "body", f"more than {limit} bytes; at most {limit} per request (--max-request-bytes)")


async def parsed_body(request: Request, raw: bytes) -> object:
    """The fields of a JSON or form body (a JSON body sent as a form, ``curl -d '{…}'`` without a JSON
    Content-Type, is still JSON)."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    text = _utf8(raw)
    if kind in _FORMS and not text.lstrip().startswith("{"):
        return await _form_fields(request, raw, text, kind)
    if not text.strip():
        raise ApiError(400, "body", "empty: send a JSON object")
    _check_nesting(raw)
    try:
        return json.loads(text, parse_int=_integer)
    except json.JSONDecodeError as e:
        raise ApiError(400, "body", f"invalid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None


def _utf8(raw: bytes) -> str:
    """The body as UTF-8, strictly (a BOM dropped, as the CLI's readers drop it): JSON's parser would take
    UTF-16 and UTF-32 too, and the page promises UTF-8."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        utf16 = raw[:2] in (b"\xff\xfe", b"\xfe\xff") or b"\x00" in raw[:4]
        hint = " (UTF-16 or UTF-32?)" if utf16 else ""
        raise ApiError(400, "body", f"not UTF-8: invalid byte at {e.start}{hint}") from None


def _check_nesting(raw: bytes) -> None:
    """400 for JSON nested deeper than MAX_NESTING, counted on the bytes outside strings, so that no parser
    recurses without bound."""
    if raw.count(b"[") + raw.count(b"{") <= MAX_NESTING:  # too few to nest deeper
        return
    outside_strings = np.frombuffer(_JSON_STRING.sub(b"", raw), dtype=np.uint8)
    deepest = int(np.cumsum(_DEPTH_STEP[outside_strings]).max(initial=0))
    if deepest > MAX_NESTING:
        raise ApiError(400, "body", f"JSON nested {deepest} levels deep; at most {MAX_NESTING}")


def _integer(digits: str) -> int:
    if len(digits.lstrip("-")) > MAX_DIGITS:
        raise ApiError(400, "body", f"a JSON integer of {len(digits.lstrip('-'))} digits; at most {MAX_DIGITS}")
    return int(digits)


async def _form_fields(request: Request, raw: bytes, text: str, kind: str) -> dict:
    """A form's fields; a field given more than once (q=…&q=…) is a list."""
    if kind == "multipart/form-data":
        from starlette.formparsers import MultiPartParser

        async def body():
            yield raw

        try:
            form = await MultiPartParser(request.headers, body(), max_fields=MAX_FORM_FIELDS).parse()
        except Exception as e:  # the parser's own exceptions vary by version
            raise ApiError(400, "body", f"invalid multipart form: {e}") from None
        pairs = list(form.multi_items())
        if any(not isinstance(value, str) for _, value in pairs):
            raise ApiError(400, "body", "file uploads are not accepted")
    else:
        try:
            pairs = parse_qsl(text, keep_blank_values=True, errors="strict", max_num_fields=MAX_FORM_FIELDS)
        except UnicodeDecodeError:
            raise ApiError(400, "body", "not UTF-8: a percent-escape that is not UTF-8") from None
        except ValueError:
            raise ApiError(400, "body", f"more than {MAX_FORM_FIELDS} fields") from None
    fields: dict = {}
    for key, value in pairs:
        fields.setdefault(key, []).append(value)
    return {key: values[0] if len(values) == 1 else values for key, values in fields.items()}
