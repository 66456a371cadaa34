"""The HTTP API of `nmt serve` (FastAPI): LibreTranslate's endpoints, nmt's own ``/v1`` endpoints, health and
metrics. The model runs in one thread (`nmt.serving.batcher.Batcher`) that decodes concurrent requests
together; the handlers only parse, check, submit and format.

    POST /translate       LibreTranslate: {"q": str | [str], "source", "target", "format": "text", "alternatives"}
    GET  /languages       LibreTranslate: [{"code", "name", "targets"}]
    POST /v1/translate    {"q", "beam_size", "n_best", "length_penalty", "alpha", "scores", "alignment"}
    POST /v1/score        {"source": [str], "target": [str]} -> log p(target | source) of each pair
    GET  /health          200 once the model is loaded, 503 before
    GET  /metrics         Prometheus text

A bad request is answered 4xx with ``{"error": "FIELD: what is wrong", "field": FIELD}``; the model loads in the
background after the server starts listening, and requests before it is ready are answered 503.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import re
import threading
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.datastructures import State
from starlette.exceptions import HTTPException as StarletteHTTPException

from nmt.data.encoding import UnencodableText, encode_sources, source_ids, target_ids
from nmt.decoding import SearchConfig
from nmt.inference import Candidate, Translation, Translator
from nmt.serving.batcher import Batcher, ScoreJob, TranslateJob
from nmt.serving.body import parsed_body, read_body
from nmt.serving.languages import language_name
from nmt.serving.metrics import Metrics
from nmt.serving.schemas import (
    ApiError,
    LibreTranslateRequest,
    ScoreRequest,
    TranslateRequest,
    validated,
)

_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_PREPARING = "nmt.preparing"  # in a request's scope: its body has arrived and its job is not yet submitted
access_log = logging.getLogger("nmt.serve.access")  # a line per request at INFO (`nmt serve --access-log`)

router = APIRouter()


@dataclass(frozen=True)
class ServeSettings:
    """What `nmt serve`'s options fix for every request."""

    source_lang: str
    target_lang: str
    search: SearchConfig  # a request's search unless it asks otherwise (/v1/translate)
    max_beam_size: int  # the widest beam (and the most n-best) a request may ask for
    max_sentences: int  # sentences (lines) or pairs in one request
    max_request_bytes: int
    max_input_tokens: int  # longer sentences are translated from their first pieces, with a warning
    max_batch_tokens: int  # source pieces decoded together
    max_wait_ms: float  # how long a batch may wait for the requests it expects
    body_timeout: float = 30.0  # seconds a request's body may take to arrive


def create_app(
    settings: ServeSettings,
    load: Callable[[], Translator],
    *,
    on_ready: Callable[[Translator, float], None] = lambda translator, seconds: None,
    on_load_error: Callable[[BaseException], None] = lambda error: None,
) -> FastAPI:
    """The app; `load` runs in a thread once the server has started (see `nmt.commands.serve`), and a model
    whose target vocabulary is narrower than `settings.max_beam_size` is a load error (no request can then ask
    for a beam the vocabulary cannot fill).

    The handlers are this module's functions on `router`; what they share lives on ``app.state``: `settings`,
    `metrics`, and `translator` and `batcher` (None until the model is loaded, then `loaded` is set);
    `stopping`, set once the server is told to stop (bodies still arriving are then answered 503)."""
    app = FastAPI(title="nmt", summary="Neural machine translation (RNN encoder-decoder)", lifespan=_lifespan)
    state = app.state
    state.settings = settings
    state.translator, state.batcher = None, None
    state.loaded = threading.Event()
    state.stopping = threading.Event()
    state.preparing = 0  # requests between their body and their job's submission (only the event loop counts)
    state.metrics = Metrics(queued=lambda: state.batcher.queued if state.batcher else 0, loaded=state.loaded.is_set)
    state.load_model = functools.partial(_load_model, state, load, on_ready, on_load_error)
    app.add_middleware(_Measured, metrics=state.metrics)
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _internal_error)
    app.include_router(router)
    return app


def _load_model(
    state: State,
    load: Callable[[], Translator],
    on_ready: Callable[[Translator, float], None],
    on_load_error: Callable[[BaseException], None],
) -> None:
    """Load the model (in its own thread), then start the batcher and set `loaded`."""
    start = time.perf_counter()
    try:
        translator = load()
        translator.check_beam_size(state.settings.max_beam_size)
    except BaseException as error:  # told to the command, which stops the server
        on_load_error(error)
        return
    settings = state.settings
    state.batcher = Batcher(
        translator,
        max_batch_tokens=settings.max_batch_tokens,
        max_wait_ms=settings.max_wait_ms,
        on_batch=state.metrics.batch,
        preparing=lambda: state.preparing,
    )
    state.translator = translator
    state.loaded.set()
    on_ready(translator, time.perf_counter() - start)


@asynccontextmanager
async def _lifespan(app: FastAPI):
    threading.Thread(target=app.state.load_model, name="nmt-serve-loader", daemon=True).start()
    yield
    # Shutting down: uvicorn has stopped accepting and answered every request in flight.
    if app.state.batcher is not None:
        await asyncio.to_thread(app.state.batcher.close)


def _ready(state: State) -> tuple[Translator, Batcher]:
    """The loaded translator and its batcher; a 503 before."""
    translator, batcher = state.translator, state.batcher
    if translator is None or batcher is None:
        raise ApiError(503, "model", "the model is still loading; retry when GET /health answers 200")
    return translator, batcher


async def _request_fields(request: Request) -> object:
    """The request body's fields (`nmt.serving.body`: read within the server's limits, UTF-8, bounded nesting)."""
    state = request.app.state
    settings: ServeSettings = state.settings
    limits = {"limit": settings.max_request_bytes, "timeout": settings.body_timeout, "stopping": state.stopping}
    raw = await read_body(request, **limits)
    request.scope[_PREPARING] = True  # until its job is submitted, or it is answered (`_Measured`)
    state.preparing += 1
    return await parsed_body(request, raw)


def _submit(request: Request, job: TranslateJob | ScoreJob) -> asyncio.Future:
    """The job's results, to await; the request no longer counts among those a batch may wait for."""
    _, batcher = _ready(request.app.state)
    _prepared(request.scope)
    return asyncio.wrap_future(batcher.submit(job))


def _prepared(scope: dict) -> None:
    if scope.pop(_PREPARING, False):
        scope["app"].state.preparing -= 1


def _ids(encode: Callable, texts: list[str], where: Callable[[int], str]):
    """`encode(texts)`, a text the tokenizer cannot take (`nmt.data.encoding.check_encodable`) a 400 naming it."""
    try:
        return encode(texts)
    except UnencodableText as e:
        raise ApiError(400, where(e.index), e.reason) from None


async def _api_error(request: Request, error: ApiError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status)


async def _http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
    field = "method" if error.status_code == 405 else "path"
    return JSONResponse({"error": f"{field}: {error.detail}", "field": field}, status_code=error.status_code)


async def _internal_error(request: Request, error: Exception) -> JSONResponse:
    return JSONResponse({"error": f"internal error: {error}", "field": "model"}, status_code=500)


async def _translated(
    request: Request, lines: list[str], search: SearchConfig, where: list[str]
) -> tuple[list[Translation], list[str]]:
    """Translations of `lines` (in order) and a warning for each line cut to max_input_tokens (`where` names each
    line in it)."""
    state = request.app.state
    translator, _ = _ready(state)
    warnings: list[str] = []
    encode = functools.partial(
        encode_sources,
        translator.tokenizer,
        max_tokens=state.settings.max_input_tokens,
        where=lambda number: where[number - 1],
        warn=warnings.append,
    )
    sources = _ids(encode, lines, where.__getitem__)
    return await _submit(request, TranslateJob(sources, search)), warnings


# -- LibreTranslate ----------------------------------------------------------------------------------------------


@router.post("/translate")
async def libre_translate(request: Request) -> dict:
    state = request.app.state
    settings: ServeSettings = state.settings
    req = validated(LibreTranslateRequest, await _request_fields(request))
    _check_pair(req.source, req.target, settings)
    texts = _texts(req.q)
    lines, where, spans = [], [], []
    for i, text in enumerate(texts):
        parts = _LINE_BREAK.split(text)
        spans.append((len(lines), len(lines) + len(parts)))
        lines += parts
        where += [f"q[{i}]" if len(parts) == 1 else f"q[{i}] line {k + 1}" for k in range(len(parts))]
    _check_count("q", len(lines), settings, what="lines")
    n_best = 1 + req.alternatives
    _check_beam("alternatives", n_best, settings)
    search = dataclasses.replace(settings.search, n_best=n_best, beam_size=max(settings.search.beam_size, n_best))
    translations, warnings = await _translated(request, lines, search, where)
    state.metrics.sentences.labels("/translate").inc(len(lines))
    joined = [_joined(translations[a:b], n_best) for a, b in spans]  # per text: best, then the alternatives
    one = isinstance(req.q, str)
    body: dict = {"translatedText": joined[0][0] if one else [j[0] for j in joined]}
    if req.alternatives:
        body["alternatives"] = joined[0][1:] if one else [j[1:] for j in joined]
    if warnings:
        body["warnings"] = warnings
    return body


@router.get("/languages")
async def languages(request: Request) -> list[dict]:
    settings: ServeSettings = request.app.state.settings
    source, target = settings.source_lang, settings.target_lang
    return [
        {"code": source, "name": language_name(source), "targets": [target]},
        {"code": target, "name": language_name(target), "targets": []},
    ]


# -- nmt's own API -----------------------------------------------------------------------------------------------


@router.post("/v1/translate")
async def v1_translate(request: Request) -> dict:
    state = request.app.state
    settings: ServeSettings = state.settings
    req = validated(TranslateRequest, await _request_fields(request))
    lines = _texts(req.q)
    _check_count("q", len(lines), settings, what="sentences")
    for i, line in enumerate(lines):
        if _LINE_BREAK.search(line):
            raise ApiError(400, f"q[{i}]", "holds a line break: send one sentence per item")
    beam_size = req.beam_size or settings.search.beam_size
    _check_beam("beam_size", beam_size, settings)  # and so no wider than the vocabulary (checked at load)
    if req.n_best > beam_size:
        raise ApiError(400, "n_best", f"{req.n_best} is more than the beam size ({beam_size})")
    translator, _ = _ready(state)
    if req.alignment and not translator.has_attention:
        raise ApiError(400, "alignment", "needs an attention model (rnnsearch); this server's has none")
    changes = {"beam_size": beam_size, "n_best": req.n_best}
    changes |= {k: v for k, v in (("length_penalty", req.length_penalty), ("alpha", req.alpha)) if v is not None}
    search = dataclasses.replace(settings.search, **changes)
    translations, warnings = await _translated(request, lines, search, [f"q[{i}]" for i in range(len(lines))])
    state.metrics.sentences.labels("/v1/translate").inc(len(lines))

    def described(c: Candidate) -> dict:
        item: dict = {"text": c.text}
        if req.scores:
            item |= {"score": c.score, "log_prob": c.log_prob}
        if req.alignment:
            item["alignment"] = [list(link) for link in c.alignment()]
        return item

    items = []
    for t in translations:
        item = described(t.candidates[0])
        if req.n_best > 1:
            item["n_best"] = [described(c) for c in t.candidates]
        items.append(item)
    return {"translations": items, "warnings": warnings}


@router.post("/v1/score")
async def v1_score(request: Request) -> dict:
    state = request.app.state
    settings: ServeSettings = state.settings
    req = validated(ScoreRequest, await _request_fields(request))
    _check_count("source", len(req.source), settings, what="pairs")
    if len(req.target) != len(req.source):
        raise ApiError(400, "target", f"{len(req.target)} targets for {len(req.source)} sources")
    translator, _ = _ready(state)
    if len(translator.members) > 1:
        raise ApiError(400, "source", "scoring takes one model; this server decodes an ensemble")
    sources = _ids(functools.partial(source_ids, translator.tokenizer), req.source, "source[{}]".format)
    targets = _ids(functools.partial(target_ids, translator.tokenizer), req.target, "target[{}]".format)
    pieces = [*sources, *targets]
    job = ScoreJob(req.source, req.target, tokens=sum(len(ids) for ids in pieces))
    scores = await _submit(request, job)
    state.metrics.sentences.labels("/v1/score").inc(len(scores))
    return {"scores": scores}


# -- operations --------------------------------------------------------------------------------------------------


@router.get("/health")
async def health(request: Request) -> JSONResponse:
    if request.app.state.loaded.is_set():
        return JSONResponse({"status": "ready"})
    return JSONResponse({"status": "loading"}, status_code=503)


@router.get("/metrics")
async def prometheus(request: Request) -> Response:
    metrics: Metrics = request.app.state.metrics
    return Response(metrics.text(), media_type="text/plain; version=0.0.4; charset=utf-8")


# -- request checks ----------------------------------------------------------------------------------------------


def _texts(q: str | list[str]) -> list[str]:
    texts = [q] if isinstance(q, str) else list(q)
    if not texts:
        raise ApiError(400, "q", "an empty list: nothing to translate")
    return texts


def _check_count(field: str, n: int, settings: ServeSettings, *, what: str) -> None:
    if n == 0:
        raise ApiError(400, field, f"an empty list: no {what}")
    if n > settings.max_sentences:
        raise ApiError(413, field, f"{n} {what}; at most {settings.max_sentences} per request (--max-sentences)")


def _check_beam(field: str, size: int, settings: ServeSettings) -> None:
    if size > settings.max_beam_size:
        raise ApiError(400, field, f"a beam of {size}; this server allows at most {settings.max_beam_size}")


def _check_pair(source: str, target: str, settings: ServeSettings) -> None:
    pair = f"{settings.source_lang}→{settings.target_lang}"
    if source not in (settings.source_lang, "auto"):
        raise ApiError(400, "source", f"{source!r} is not served: this server translates {pair}")
    if target != settings.target_lang:
        raise ApiError(400, "target", f"{target!r} is not served: this server translates {pair}")


def _joined(translations: list[Translation], n_best: int) -> list[str]:
    """The text of each rank (best, then the alternatives) for the lines of one multi-line text: rank k joins
    each line's k-th candidate (its last one where a line has fewer)."""
    return ["\n".join(t.candidates[min(k, len(t.candidates) - 1)].text for t in translations) for k in range(n_best)]


class _Measured:
    """ASGI middleware: every request's latency and status code, by endpoint (unknown paths count as "other",
    so that a scan of random URLs cannot grow the metrics without bound), and its line in the access log."""

    ENDPOINTS = frozenset({"/translate", "/languages", "/v1/translate", "/v1/score", "/health", "/metrics"})

    def __init__(self, app, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        endpoint = scope["path"] if scope["path"] in self.ENDPOINTS else "other"
        counted = endpoint != "/metrics"

        async def sending(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        if counted:
            self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, sending)
        finally:
            _prepared(scope)  # refused before its job was submitted
            if counted:
                self.metrics.in_flight.dec()
            seconds = time.perf_counter() - start
            self.metrics.requests.labels(endpoint, str(status)).inc()
            self.metrics.latency.labels(endpoint).observe(seconds)
            if access_log.isEnabledFor(logging.INFO):
                client = "{}:{}".format(*scope["client"]) if scope.get("client") else "-"
                path = scope.get("raw_path", b"").decode("ascii", "backslashreplace")  # as sent: no line breaks
                access_log.info('%s "%s %s" %d %.1f ms', client, scope["method"], path, status, 1000 * seconds)
