"""Throughput and latency of `nmt serve` against `nmt translate` of the same lines as a file.

    python scripts/bench_serve.py --checkpoint runs/multi30k_en_fr_attention/checkpoints/best.ckpt \
        [--input data/multi30k/test_2016_flickr.en.gz] [--clients 1 4 16] [--threads 2] [--beam-size 5]

Prints one JSON object per measurement:

- ``file``: the lines translated as one file by a loaded model (`Translator.translate`, what `nmt translate`
  does after loading): sentences/s.
- ``one line``: each line translated alone by a loaded model, one call per line: the latency a server cannot
  beat for a lone request (p50, p99).
- ``groups``: the lines decoded N at a time in input order by a loaded model, for each N of ``--clients``: the
  most a server can do for N clients that each send one line and wait for its answer (at most N lines are
  ever waiting, so no batch holds more).
- ``command``: ``nmt translate --input FILE`` as a user runs it (start, model loading, the file, writing):
  sentences/s of the whole command.
- ``serve``: a server (`nmt serve`, a subprocess on a free loopback port) and N client threads, each sending
  the lines one per request (LibreTranslate's ``POST /translate``, a kept-alive connection per client) until
  every line is sent once: sentences/s, latency p50/p99, and the mean requests per batch from ``/metrics``.

The baselines run before the server starts, so nothing competes with them; the clients share the machine with
the server (on a 2-core CPU that costs the server some of its throughput). Run on a quiet machine.
"""

from __future__ import annotations

import argparse
import http.client
import json
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def baselines(
    checkpoint: str, lines: list[str], *, threads: int, beam_size: int, batch_tokens: int, clients: list[int]
) -> None:
    import torch

    from nmt import SearchConfig, Translator
    from nmt.data.encoding import encode_sources

    torch.set_num_threads(threads)
    translator = Translator.load(checkpoint, device="cpu")
    search = SearchConfig(beam_size=beam_size)
    list(translator.translate(lines[:20], search))  # warm-up
    start = time.perf_counter()
    list(translator.translate(lines, search, batch_tokens=batch_tokens))
    seconds = time.perf_counter() - start
    print(json.dumps({"bench": "file", "sentences": len(lines), "seconds": round(seconds, 2),
                      "sentences_per_s": round(len(lines) / seconds, 1)}), flush=True)  # fmt: skip
    latencies = []
    for line in lines:
        start = time.perf_counter()
        list(translator.translate([line], search))
        latencies.append(time.perf_counter() - start)
    p50, p99 = (round(1000 * percentile(latencies, q), 1) for q in (0.5, 0.99))
    print(json.dumps({"bench": "one line", "sentences": len(lines), "p50_ms": p50, "p99_ms": p99}), flush=True)
    sources = encode_sources(translator.tokenizer, lines, max_tokens=250, where=lambda n: f"input:{n}")
    for n in sorted({c for c in clients if c > 1}):
        start = time.perf_counter()
        for a in range(0, len(sources), n):
            translator.translate_sources(sources[a : a + n], search, batch_tokens=batch_tokens)
        seconds = time.perf_counter() - start
        rate = round(len(lines) / seconds, 1)
        found = {"bench": "groups", "lines_per_group": n, "sentences": len(lines), "sentences_per_s": rate}
        print(json.dumps(found), flush=True)


def command_baseline(checkpoint: str, lines: list[str], *, threads: int, beam_size: int, batch_tokens: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp, "input.txt")
        source.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        command = [sys.executable, "-m", "nmt", "translate", "--checkpoint", checkpoint, "--input", str(source)]
        command += ["--output", str(Path(tmp, "output.txt")), "--beam-size", str(beam_size), "--threads", str(threads)]
        command += ["--batch-tokens", str(batch_tokens), "--no-progress"]
        start = time.perf_counter()
        subprocess.run(command, check=True, cwd=ROOT)
        seconds = time.perf_counter() - start
    print(json.dumps({"bench": "command", "sentences": len(lines), "seconds": round(seconds, 2),
                      "sentences_per_s": round(len(lines) / seconds, 1)}), flush=True)  # fmt: skip


def start_server(checkpoint: str, *, threads: int, beam_size: int, extra: list[str]) -> tuple[subprocess.Popen, str]:
    command = [sys.executable, "-m", "nmt", "serve", "--checkpoint", checkpoint, "--port", "0", "--source-lang", "en"]
    command += ["--target-lang", "fr", "--threads", str(threads), "--beam-size", str(beam_size), *extra]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    found = re.search(r"listening on http://([\d.]+):(\d+)", process.stderr.readline())
    if not found:
        raise SystemExit(f"nmt serve did not start: {process.stderr.read()}")
    host, port = found.group(1), found.group(2)
    while "ready:" not in process.stderr.readline():
        if process.poll() is not None:
            raise SystemExit("nmt serve stopped while loading")
    threading.Thread(target=process.stderr.read, daemon=True).start()  # keep draining its stderr
    return process, f"{host}:{port}"


def metric(address: str, name: str) -> float:
    connection = http.client.HTTPConnection(address, timeout=60)
    connection.request("GET", "/metrics")
    text = connection.getresponse().read().decode()
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


def load(address: str, lines: list[str], clients: int) -> dict:
    """Every line sent once, one per request, by `clients` threads at once; sentences/s and latencies."""
    next_line = iter(range(len(lines)))
    taking = threading.Lock()
    latencies: list[float] = []
    failures: list[str] = []
    ready = threading.Barrier(clients + 1)

    def client() -> None:
        connection = http.client.HTTPConnection(address, timeout=300)
        ready.wait()
        while True:
            with taking:
                i = next(next_line, None)
            if i is None:
                return
            body = json.dumps({"q": lines[i], "source": "en", "target": "fr"})
            start = time.perf_counter()
            connection.request("POST", "/translate", body, {"Content-Type": "application/json"})
            reply = connection.getresponse()
            text = reply.read()
            latencies.append(time.perf_counter() - start)
            if reply.status != 200 or "translatedText" not in json.loads(text):
                failures.append(f"{reply.status} {text[:200]!r}")

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    batches_before = metric(address, "nmt_batch_requests_count")
    ready.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - start
    if failures:
        raise SystemExit(f"{len(failures)} requests failed, e.g. {failures[0]}")
    batches = metric(address, "nmt_batch_requests_count") - batches_before
    return {
        "bench": "serve",
        "clients": clients,
        "sentences": len(lines),
        "seconds": round(seconds, 2),
        "sentences_per_s": round(len(lines) / seconds, 1),
        "p50_ms": round(1000 * percentile(latencies, 0.5), 1),
        "p99_ms": round(1000 * percentile(latencies, 0.99), 1),
        "mean_ms": round(1000 * statistics.fmean(latencies), 1),
        "requests_per_batch": round(len(lines) / batches, 2) if batches else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--input", default=str(ROOT / "data" / "multi30k" / "test_2016_flickr.en.gz"))
    parser.add_argument("--lines", type=int, default=None, help="only the first N lines")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--beam-size", type=int, default=5)
    parser.add_argument("--batch-tokens", type=int, default=500, help="the file's batches and the server's budget")
    parser.add_argument("--max-wait-ms", type=float, default=None, help="the server's (default: its own)")
    parser.add_argument("--skip-baselines", action="store_true")
    args = parser.parse_args()

    from nmt.textio import read_lines

    lines = [text for text, _ in read_lines(args.input)][: args.lines]
    if not args.skip_baselines:
        settings = {"threads": args.threads, "beam_size": args.beam_size, "batch_tokens": args.batch_tokens}
        baselines(args.checkpoint, lines, clients=args.clients, **settings)
        command_baseline(args.checkpoint, lines, **settings)
    extra = ["--max-batch-tokens", str(args.batch_tokens), "--max-sentences", "1000"]
    if args.max_wait_ms is not None:
        extra += ["--max-wait-ms", str(args.max_wait_ms)]
    process, address = start_server(args.checkpoint, threads=args.threads, beam_size=args.beam_size, extra=extra)
    try:
        load(address, lines[:20], 1)  # warm-up
        for clients in args.clients:
            print(json.dumps(load(address, lines, clients)), flush=True)
    finally:
        process.terminate()
        process.wait(timeout=60)


if __name__ == "__main__":
    main()
