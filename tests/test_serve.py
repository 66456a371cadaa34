"""``nmt serve`` end to end: a real server in a subprocess on a free loopback port, real clients (LibreTranslate's
own Python client, and plain HTTP for the /v1 endpoints); the answers are what ``nmt translate`` writes."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from libretranslatepy import LibreTranslateAPI

from nmt.cli import main
from nmt.inference import Translator
from tests.factories import multi30k_lines

pytestmark = pytest.mark.slow  # starts servers in subprocesses: not in the fast tier

ROOT = Path(__file__).resolve().parents[1]
LINES = multi30k_lines("test_2016_flickr", "en", 48)
LIMITS = ["--max-sentences", "20", "--max-request-bytes", "4000", "--max-input-tokens", "60", "--max-beam-size", "8"]


@pytest.fixture(scope="module")
def checkpoint(tiny_checkpoints) -> Path:
    """The tiny RNNsearch of seed 3 here, in place of conftest's seed 0."""
    return tiny_checkpoints(architecture="rnnsearch", seed=3)


@contextmanager
def serving(checkpoint: Path, *options: str) -> Iterator[tuple[subprocess.Popen, str]]:
    """`nmt serve` on a free port; (the process, its base URL) once GET /health answers 200."""
    command = [sys.executable, "-m", "nmt", "serve", "--checkpoint", str(checkpoint), "--port", "0"]
    command += ["--source-lang", "en", "--target-lang", "fr", "--threads", "1", *options]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        first = process.stderr.readline()
        found = re.search(r"listening on (http://\S+) ", first)
        assert found, first + process.stderr.read()
        url = found.group(1)
        deadline = time.monotonic() + 120
        while request(url, "GET", "/health")[0] != 200:
            assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()
            time.sleep(0.05)
        yield process, url
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)
        process.stderr.close()


def request(url: str, method: str, path: str, body: object = None, *, raw: bytes | None = None, kind: str = ""):
    """(status, decoded JSON or text) of one HTTP request."""
    data = raw if raw is not None else None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": kind or "application/json"} if data is not None else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url + path, data, headers, method=method)) as reply:
            status, text, kind = reply.status, reply.read().decode(), reply.headers.get_content_type()
    except urllib.error.HTTPError as e:
        status, text, kind = e.code, e.read().decode(), e.headers.get_content_type()
    except urllib.error.URLError:
        return 0, None  # not listening (yet, or any more)
    return status, json.loads(text) if kind == "application/json" else text


def cli_translate(tmp_path: Path, checkpoint: Path, lines: list[str], *options: str) -> list[str]:
    """`nmt translate` of `lines` with the server's --max-input-tokens (LIMITS) and `options`."""
    source, output = tmp_path / "in.txt", tmp_path / "out.txt"
    source.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    args = ["translate", "--checkpoint", str(checkpoint), "--input", str(source), "--output", str(output)]
    assert main([*args, "--threads", "1", "--no-progress", "--max-input-tokens", "60", *options]) == 0
    return output.read_text(encoding="utf-8").splitlines()


@pytest.fixture(scope="module")
def server(checkpoint) -> Iterator[str]:
    with serving(checkpoint, *LIMITS) as (_, url):
        yield url


def test_libretranslate_client_gets_what_nmt_translate_writes(server, checkpoint, tmp_path):
    client = LibreTranslateAPI(server)
    assert client.languages() == [
        {"code": "en", "name": "English", "targets": ["fr"]},
        {"code": "fr", "name": "French", "targets": []},
    ]
    expected = cli_translate(tmp_path, checkpoint, LINES[:6])
    assert [client.translate(line, "en", "fr") for line in LINES[:6]] == expected
    # A list, as JSON; a multi-line text is translated line by line and keeps its line breaks.
    status, body = request(server, "POST", "/translate", {"q": LINES[:3], "source": "en", "target": "fr"})
    assert (status, body) == (200, {"translatedText": expected[:3]})
    status, body = request(server, "POST", "/translate", {"q": "\n".join(LINES[:2]), "source": "auto", "target": "fr"})
    assert (status, body) == (200, {"translatedText": "\n".join(expected[:2])})


def test_v1_translate_gives_the_cli_n_best_scores_and_alignments(server, checkpoint, tmp_path):
    options = {"beam_size": 4, "n_best": 3, "scores": True, "alignment": True}
    status, body = request(server, "POST", "/v1/translate", {"q": LINES[:5], **options})
    assert status == 200 and body["warnings"] == []
    cli = cli_translate(tmp_path, checkpoint, LINES[:5], "--beam-size", "4", "--n-best", "3", "--scores", "--alignment")
    served = []
    for i, item in enumerate(body["translations"]):
        assert {k: item[k] for k in ("text", "score", "log_prob", "alignment")} == item["n_best"][0]
        for c in item["n_best"]:
            pharaoh = " ".join(f"{s}-{t}" for s, t in c["alignment"])
            served.append(f"{i} ||| {c['text']} ||| {c['score']:.4f} ||| {c['log_prob']:.4f} ||| {pharaoh}")
    assert served == cli


def test_v1_score_gives_the_models_log_probabilities(server, checkpoint):
    targets = multi30k_lines("test_2016_flickr", "fr", 6)
    status, body = request(server, "POST", "/v1/score", {"source": LINES[:6], "target": targets})
    assert status == 200
    expected = Translator.load(checkpoint, device="cpu").score(LINES[:6], targets)
    assert [s["log_prob"] for s in body["scores"]] == pytest.approx(expected.logprob.tolist(), rel=1e-6)
    assert [s["tokens"] for s in body["scores"]] == expected.n_tokens.tolist()


def test_sixteen_clients_at_once_each_get_their_own_answers_in_order(server, checkpoint, tmp_path):
    expected = dict(zip(LINES, cli_translate(tmp_path, checkpoint, LINES), strict=True))
    start = threading.Barrier(16)
    answers: dict[int, list] = {}

    def client(k: int) -> None:
        mine = [LINES[(3 * k + j) % len(LINES)] for j in range(3)]  # overlapping sets, each in its own order
        start.wait()
        got = []
        for n in range(4):
            q = mine[n % 3 :] + mine[: n % 3]
            status, body = request(server, "POST", "/v1/translate", {"q": q})
            got.append((q, status, [t["text"] for t in body["translations"]]))
        answers[k] = got

    threads = [threading.Thread(target=client, args=(k,)) for k in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert sorted(answers) == list(range(16))
    for got in answers.values():
        for q, status, texts in got:
            assert status == 200 and texts == [expected[line] for line in q]
    metrics = request(server, "GET", "/metrics")[1]
    batches = float(re.search(r"^nmt_batch_requests_count (\S+)", metrics, re.M).group(1))
    requests = float(re.search(r'^nmt_requests_total\{code="200",endpoint="/v1/translate"\} (\S+)', metrics, re.M)[1])
    assert batches < requests  # concurrent requests were decoded together


TOO_LONG = " ".join(["word"] * 100)
FORM = "application/x-www-form-urlencoded"
BAD_REQUESTS = [
    # (path, body or raw bytes, content type, status, field)
    ("/translate", b"{not json", "application/json", 400, "body"),
    ("/translate", b"\xff\xfe\x00", "application/json", 400, "body"),
    ("/translate", b"", "application/json", 400, "body"),
    ("/translate", [1, 2], "", 400, "body"),
    ("/translate", {"q": 5, "source": "en", "target": "fr"}, "", 400, "q"),
    ("/translate", {"q": ["a", 7], "source": "en", "target": "fr"}, "", 400, "q[1]"),
    ("/translate", {"q": [], "source": "en", "target": "fr"}, "", 400, "q"),
    ("/translate", {"q": "a"}, "", 400, "source"),
    ("/translate", {"q": "a", "source": "de", "target": "fr"}, "", 400, "source"),
    ("/translate", {"q": "a", "source": "en", "target": "de"}, "", 400, "target"),
    ("/translate", {"q": "a", "source": "en", "target": "fr", "format": "html"}, "", 400, "format"),
    ("/translate", {"q": "a", "source": "en", "target": "fr", "alternatives": 99}, "", 400, "alternatives"),
    ("/translate", {"q": ["a"] * 21, "source": "en", "target": "fr"}, "", 413, "q"),
    ("/translate", {"q": "a" * 5000, "source": "en", "target": "fr"}, "", 413, "body"),
    ("/v1/translate", {"q": "a", "checkpoint": "/etc/passwd"}, "", 400, "checkpoint"),
    ("/v1/translate", {"q": "a", "beam_size": 0}, "", 400, "beam_size"),
    ("/v1/translate", {"q": "a", "beam_size": 9}, "", 400, "beam_size"),
    ("/v1/translate", {"q": "a", "beam_size": 2, "n_best": 3}, "", 400, "n_best"),
    ("/v1/translate", {"q": ["a", "b\nc"]}, "", 400, "q[1]"),
    ("/v1/translate", {"q": "a", "scores": "maybe"}, "", 400, "scores"),
    ("/v1/score", {"source": ["a", "b"], "target": ["x"]}, "", 400, "target"),
    ("/v1/score", {"source": [], "target": []}, "", 400, "source"),
    ("/v1/score", {"source": "a", "target": "b"}, "", 400, "source"),
    # Nesting that would exhaust a recursive parser, in a field the endpoint reads or in one it ignores.
    ("/translate", b'{"q": ' + b"[" * 1900 + b"]" * 1900 + b"}", "application/json", 400, "body"),
    (
        "/translate",
        b'{"q": "a", "source": "en", "target": "fr", "x": ' + b"[" * 1900 + b"]" * 1900 + b"}",
        FORM,
        400,
        "body",
    ),
    ("/v1/translate", b'{"q": "a", "n": ' + b'[{"a":' * 400 + b"1" + b"}]" * 400 + b"}", "", 400, "body"),
    ("/v1/score", b'{"source": ' + b"[" * 1900 + b"]" * 1900 + b', "target": []}', "", 400, "body"),
    ("/translate", b'{"q": "a", "source": "en", "target": "fr", "x": ' + b"9" * 101 + b"}", "", 400, "body"),
    # Text that is not Unicode: a lone surrogate as a JSON escape (any text field), or as bytes (not UTF-8).
    ("/translate", b'{"q": "\\ud800", "source": "en", "target": "fr"}', "", 400, "q[0]"),
    ("/translate", b'{"q": ["a", "b\\nc \\udfff"], "source": "en", "target": "fr"}', "", 400, "q[1] line 2"),
    ("/v1/translate", b'{"q": ["a dog", "\\udc80"]}', "", 400, "q[1]"),
    ("/v1/score", b'{"source": ["a", "b"], "target": ["x", "\\ud83d"]}', "", 400, "target[1]"),
    ("/v1/score", b'{"source": ["\\ud800"], "target": ["x"]}', "", 400, "source[0]"),
    ("/v1/translate", b'{"q": "a", "\\ud800": 1}', "", 400, "body"),
    ("/translate", b'{"q": "a", "source": "\\ud800", "target": "fr"}', "", 400, "source"),
    ("/translate", b'{"q": "\xed\xa0\x80", "source": "en", "target": "fr"}', "", 400, "body"),
    ("/translate", b"q=%ED%A0%80&source=en&target=fr", FORM, 400, "body"),
    # Bodies in other encodings than UTF-8.
    ("/translate", json.dumps({"q": "a", "source": "en", "target": "fr"}).encode("utf-16"), "", 400, "body"),
    ("/translate", json.dumps({"q": "a", "source": "en", "target": "fr"}).encode("utf-16-le"), "", 400, "body"),
    ("/translate", json.dumps({"q": "a", "source": "en", "target": "fr"}).encode("utf-32"), "", 400, "body"),
    ("/v1/score", json.dumps({"source": ["a"], "target": ["b"]}).encode("utf-16-be"), "", 400, "body"),
    ("/nowhere", {"q": "a"}, "", 404, "path"),
    ("/health", {"q": "a"}, "", 405, "method"),
]


@pytest.mark.parametrize(("path", "body", "kind", "status", "field"), BAD_REQUESTS)
def test_bad_requests_are_answered_4xx_naming_the_field(server, path, body, kind, status, field):
    raw = body if isinstance(body, bytes) else None
    got, answer = request(server, "POST", path, None if raw is not None else body, raw=raw, kind=kind)
    assert got == status, answer
    assert answer["field"] == field and answer["error"].startswith(f"{field}: ")


def test_a_sentence_too_long_is_translated_from_its_start_with_a_warning(server):
    status, body = request(server, "POST", "/v1/translate", {"q": ["A dog.", TOO_LONG]})
    assert status == 200 and len(body["translations"]) == 2
    assert re.fullmatch(r"q\[1\]: \d+ pieces; only the first 60 are read \(--max-input-tokens\)", body["warnings"][0])
    status, body = request(server, "POST", "/translate", {"q": TOO_LONG, "source": "en", "target": "fr"})
    warning = r"q\[0\]: \d+ pieces; only the first 60 are read \(--max-input-tokens\)"
    assert status == 200 and re.fullmatch(warning, body["warnings"][0])


def test_metrics_are_prometheus_text(server):
    request(server, "GET", "/languages")
    status, text = request(server, "GET", "/metrics")
    assert status == 200
    assert re.search(r'^nmt_requests_total\{code="200",endpoint="/languages"\} [1-9]', text, re.M)
    for name in ("nmt_request_seconds_bucket", "nmt_batch_sentences_bucket", "nmt_model_loaded 1.0"):
        assert name in text


def test_sigterm_answers_the_requests_in_flight_then_exits_0(checkpoint):
    with serving(checkpoint, "--beam-size", "8", "--max-sentences", "48") as (process, url):
        results: list = []

        def client() -> None:
            results.append(request(url, "POST", "/v1/translate", {"q": LINES})[0])

        threads = [threading.Thread(target=client) for _ in range(6)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 60
        while "nmt_requests_in_flight 6.0" not in request(url, "GET", "/metrics")[1]:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        process.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(timeout=120)
        assert process.wait(timeout=60) == 0
        assert results == [200] * 6
        assert request(url, "GET", "/health")[0] == 0  # no longer listening


def test_health_answers_503_until_the_model_is_loaded(checkpoint):
    """In-process, so that loading can be held back: the real app on a real uvicorn server."""
    import uvicorn

    from nmt.decoding import SearchConfig
    from nmt.serving.app import ServeSettings, create_app

    release = threading.Event()

    def load() -> Translator:
        release.wait(60)
        return Translator.load(checkpoint, device="cpu")

    settings = ServeSettings("en", "fr", SearchConfig(), 8, 20, 4000, 60, 500, 5.0)
    listening = socket.create_server(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{listening.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(create_app(settings, load), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listening]})
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while request(url, "GET", "/health")[0] == 0:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert request(url, "GET", "/health") == (503, {"status": "loading"})
        status, body = request(url, "POST", "/translate", {"q": "A dog.", "source": "en", "target": "fr"})
        assert (status, body["field"]) == (503, "model")
        release.set()
        while request(url, "GET", "/health")[0] != 200:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert request(url, "POST", "/translate", {"q": "A dog.", "source": "en", "target": "fr"})[0] == 200
    finally:
        release.set()
        server.should_exit = True
        thread.join(timeout=60)


def test_a_bad_checkpoint_stops_the_server_with_one_line(tmp_path):
    broken = tmp_path / "broken.ckpt"
    broken.write_bytes(b"not a checkpoint")
    command = [sys.executable, "-m", "nmt", "serve", "--checkpoint", str(broken), "--port", "0"]
    result = subprocess.run(
        [*command, "--source-lang", "en", "--target-lang", "fr"], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"nmt serve: error: {broken}: ") and "Traceback" not in result.stderr


def test_a_port_in_use_is_one_line(checkpoint):
    taken = socket.create_server(("127.0.0.1", 0))
    port = str(taken.getsockname()[1])
    command = [sys.executable, "-m", "nmt", "serve", "--checkpoint", str(checkpoint), "--port", port]
    result = subprocess.run(
        [*command, "--source-lang", "en", "--target-lang", "fr"], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    taken.close()
    assert result.returncode == 2
    assert result.stderr.strip() == f"nmt serve: error: --port: 127.0.0.1:{port}: Address already in use"


def test_a_widest_beam_wider_than_the_vocabulary_is_a_load_error(checkpoint):
    """In-process (`--max-beam-size` stops at 256, below the tiny model's 400 pieces): the app refuses the model,
    as the command then says in one line, so that no request can ask for a beam the vocabulary cannot fill."""
    from nmt.decoding import SearchConfig
    from nmt.serving.app import ServeSettings, create_app

    errors: list[BaseException] = []
    settings = ServeSettings("en", "fr", SearchConfig(), 401, 20, 4000, 60, 500, 5.0)
    app = create_app(settings, lambda: Translator.load(checkpoint, device="cpu"), on_load_error=errors.append)
    app.state.load_model()  # what the server's start runs in a thread
    beam = "a beam of 401 is wider than its target vocabulary (400 pieces): the first step has no more words to fill"
    assert [str(error) for error in errors] == [f"{checkpoint}: {beam} the beam with"]
    assert app.state.translator is None and not app.state.loaded.is_set()


def half_a_body(url: str, path: str = "/translate") -> socket.socket:
    """A connection that has sent a request's headers and 10 of its 100 body bytes, and waits."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    connection = socket.create_connection((host, int(port)), timeout=30)
    head = f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    connection.sendall(head.encode() + b'{"q": "a ')
    return connection


def answer_status(connection: socket.socket) -> int:
    """The status of the answer on `connection` (waiting for it up to the socket's timeout)."""
    received = b""
    while b"\r\n" not in received:
        chunk = connection.recv(4096)
        assert chunk, f"closed without an answer: {received!r}"
        received += chunk
    return int(received.split(b" ", 2)[1])


def test_access_log_a_client_gone_mid_body_and_a_stalled_body(checkpoint):
    """--access-log: a line per request on stderr; a client that closes mid-body is that line and nothing else
    (no traceback); a body that stalls is answered 408 after --body-timeout."""
    with serving(checkpoint, "--access-log", "--body-timeout", "1") as (process, url):
        gone = half_a_body(url)
        gone.close()
        stalled, start = half_a_body(url, "/v1/score"), time.monotonic()
        assert answer_status(stalled) == 408 and 0.9 < time.monotonic() - start < 10
        stalled.close()
        assert request(url, "POST", "/translate", {"q": "A dog.", "source": "en", "target": "fr"})[0] == 200
        digits = b'{"q": "a", "source": "en", "target": "fr", "x": ' + b"9" * 5000 + b"}"  # over Python's int limit
        assert request(url, "POST", "/translate", raw=digits)[0] == 400
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
        log = process.stderr.read()
    assert "Traceback" not in log and "ClientDisconnect" not in log and "ERROR" not in log, log
    lines = [line for line in log.splitlines() if '"POST ' in line]
    access = r'nmt serve: 127\.0\.0\.1:\d+ "POST {}" {} \d+\.\d ms'
    assert len(lines) == 4, log
    assert re.fullmatch(access.format("/translate", 499), lines[0]), lines
    assert re.fullmatch(access.format("/v1/score", 408), lines[1]), lines
    assert re.fullmatch(access.format("/translate", 200), lines[2]), lines
    assert re.fullmatch(access.format("/translate", 400), lines[3]), lines
    assert re.search(access.format("/health", 200).replace("POST", "GET"), log)


def test_sigterm_answers_the_requests_whose_bodies_arrived_and_does_not_wait_for_a_stalled_one(checkpoint):
    options = ("--beam-size", "8", "--max-sentences", "48", "--body-timeout", "600", "--shutdown-grace", "60")
    with serving(checkpoint, *options) as (process, url):
        stalled = half_a_body(url)
        results: list = []
        threads = [
            threading.Thread(target=lambda: results.append(request(url, "POST", "/v1/translate", {"q": LINES})[0]))
            for _ in range(3)
        ]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 60
        while "nmt_requests_in_flight 4.0" not in request(url, "GET", "/metrics")[1]:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        process.send_signal(signal.SIGTERM)
        assert answer_status(stalled) == 503  # at once: not after --body-timeout
        for t in threads:
            t.join(timeout=120)
        assert process.wait(timeout=60) == 0
        assert results == [200] * 3
        assert "Traceback" not in process.stderr.read()
