"""``nmt serve``: a translation server over HTTP that decodes concurrent requests together.

    nmt serve --checkpoint CKPT --source-lang en --target-lang fr [--host 127.0.0.1] [--port 8080] …

One model in memory; requests from many clients are gathered into batches (up to ``--max-batch-tokens``
source pieces; a batch also waits up to ``--max-wait-ms`` for the requests it expects) and each is answered with its
own results. LibreTranslate's API (``POST /translate``, ``GET /languages``), so LibreTranslate clients work
unchanged, and nmt's own: ``POST /v1/translate`` (beam size, n-best, scores, alignment), ``POST /v1/score``
(log p(target | source) of sentence pairs), ``GET /health`` (200 once the model is loaded) and
``GET /metrics`` (Prometheus). See docs/serving.md.

The server listens at once and loads the model in the background; ``GET /health`` answers 503 until it is
ready. SIGTERM stops accepting connections, answers every request whose body has arrived (a body still
arriving gets 503), cancels what is left after ``--shutdown-grace`` seconds, then exits 0. Needs the serve
extra: ``pip install -e ".[serve]"`` (FastAPI and uvicorn).
"""

from __future__ import annotations

import errno
import logging
import signal
import socket
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from jsonargparse import ArgumentParser

from nmt.commands import options
from nmt.commands.options import CommandParser, Range, count
from nmt.errors import InputError

PROG = "nmt serve"


def build_parser() -> ArgumentParser:
    parser = CommandParser(prog=PROG, description=__doc__.split("\n\n")[0])
    options.add_model_arguments(parser)
    parser.add_argument("--source-lang", required=True, help="the language code clients send as source, e.g. en")
    parser.add_argument("--target-lang", required=True, help="the language code clients send as target, e.g. fr")
    parser.add_argument("--host", default="127.0.0.1", help="the address to listen on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=count(0, 65535), default=8080, help="the TCP port (0: any free port)")
    options.add_search_arguments(parser)
    options.add_runtime_arguments(parser, batch_tokens=None)
    parser.add_argument(
        "--max-batch-tokens",
        type=options.BATCH_TOKENS,
        default=options.TRANSLATE_BATCH_TOKENS,
        help="source pieces decoded together, over all the requests in a batch (use more on a GPU)",
    )
    parser.add_argument(
        "--max-wait-ms",
        type=Range(float, 0.0, 1000.0),
        default=20.0,
        help="how long a batch may wait for the requests it expects (a lone client is answered at once)",
    )
    options.add_input_arguments(parser, doing="translated", encoding=False)
    parser.add_argument(
        "--max-sentences", type=count(1, 100_000), default=100, help="sentences (or pairs) in one request"
    )
    parser.add_argument("--max-request-bytes", type=count(1, 1 << 30), default=1 << 20, help="the largest request body")
    parser.add_argument(
        "--max-beam-size",
        type=options.BEAM_SIZE,
        default=16,
        help="the widest beam (and the most n-best or alternatives) a request may ask for",
    )
    parser.add_argument(
        "--body-timeout",
        type=Range(float, 0.1, 3600.0),
        default=30.0,
        help="seconds a request's body may take to arrive (then 408: a stalled client does not hold the server)",
    )
    parser.add_argument(
        "--shutdown-grace",
        type=Range(float, 0.0, 3600.0),
        default=30.0,
        help="on SIGTERM, seconds to finish the requests in flight before they are cancelled and the server exits",
    )
    parser.add_argument("--access-log", action="store_true", help="a line per request on stderr")
    return parser


def main(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    search = options.search_config(args, parser)
    if args.beam_size > args.max_beam_size:
        message = f"{args.beam_size} is more than --max-beam-size {args.max_beam_size}"
        raise InputError(path="--beam-size", message=message)
    for path in [args.checkpoint, *args.ensemble]:
        if not Path(path).is_file():
            raise InputError(path=path, message="no such checkpoint file")
    try:
        import uvicorn

        from nmt.serving.app import ServeSettings, create_app
    except ImportError as e:
        message = "not installed: nmt serve needs the serve extra, pip install -e '.[serve]'"
        raise InputError(path=e.name or "fastapi", message=message) from None
    from nmt.inference import Translator

    settings = ServeSettings(
        source_lang=args.source_lang,
        target_lang=args.target_lang,
        search=search,
        max_beam_size=args.max_beam_size,
        max_sentences=args.max_sentences,
        max_request_bytes=args.max_request_bytes,
        max_input_tokens=args.max_input_tokens,
        max_batch_tokens=args.max_batch_tokens,
        max_wait_ms=args.max_wait_ms,
        body_timeout=args.body_timeout,
    )

    def load() -> Translator:  # the app refuses a vocabulary narrower than --max-beam-size
        return Translator.load(args.checkpoint, ensemble=args.ensemble, device=args.device, dtype=args.dtype)

    failures: list[BaseException] = []

    def on_load_error(error: BaseException) -> None:
        failures.append(error)
        server.should_exit = True

    def on_ready(translator: Translator, seconds: float) -> None:
        kind = translator.network.architecture
        _say(f"ready: {args.checkpoint} ({kind}, {args.source_lang}→{args.target_lang}) loaded in {seconds:.1f} s")

    app = create_app(settings, load, on_ready=on_ready, on_load_error=on_load_error)
    listening = _bound(args.host, args.port)
    host, port = listening.getsockname()[:2]
    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=args.shutdown_grace)
    server = _stopping_server(uvicorn.Server, app.state.stopping)(config)
    _log_requests(args.access_log)
    shown = f"[{host}]" if ":" in host else host
    _say(f"listening on http://{shown}:{port} (loading the model; GET /health answers 200 once it is ready)")
    with options.torch_threads(args.threads), _sigterm_finishes():
        server.run(sockets=[listening])
    if failures:
        raise failures[0]
    _say("stopped")
    return 0


def _stopping_server(server_class: type, stopping: threading.Event) -> type:
    """uvicorn's server that also sets `stopping` when told to stop (SIGTERM, Ctrl-C), so that the requests whose
    bodies are still arriving are answered at once rather than holding the shutdown."""

    class StoppingServer(server_class):
        def handle_exit(self, sig, frame) -> None:
            stopping.set()
            super().handle_exit(sig, frame)

    return StoppingServer


def _log_requests(enabled: bool) -> None:
    """The access log (`nmt.serving.app`'s, a line per request) on stderr, or off."""
    log = logging.getLogger("nmt.serve.access")
    log.setLevel(logging.INFO if enabled else logging.WARNING)
    log.propagate = False
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(f"{PROG}: %(message)s"))
        log.addHandler(handler)


def _bound(host: str, port: int) -> socket.socket:
    """A listening socket, or an InputError naming --host/--port (taken, not an address of this machine …)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        listening = socket.socket(family, kind, proto)
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listening.bind(address)
        listening.listen(2048)
    except OSError as e:
        option = "--port" if e.errno == errno.EADDRINUSE else "--host"
        raise InputError(path=option, message=f"{host}:{port}: {e.strerror or e}") from None
    return listening


@contextmanager
def _sigterm_finishes() -> Iterator[None]:
    """uvicorn takes SIGTERM during the run (stop accepting, answer what is in flight) and raises it again once
    it has stopped; a no-op handler then makes that a normal end, exit status 0, rather than an abort."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: None)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _say(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)
