"""The server's batching queue (`nmt.serving.batcher.Batcher`) with a stand-in translator that records the
batches it is given: which requests are decoded together, and that each gets its own answers."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager

import numpy as np
import pytest

from nmt.data.encoding import Source
from nmt.decoding import SearchConfig
from nmt.inference import Candidate, Translation
from nmt.scoring.scorer import PairScores
from nmt.serving.batcher import Batcher, ScoreJob, TranslateJob


class RecordingTranslator:
    """Answers each source with its own ids as text; the first `hold` calls wait until released."""

    def __init__(self, hold: int = 0) -> None:
        self.batches: list[int] = []
        self.started = threading.Semaphore(0)
        self.release = threading.Semaphore(0)
        self.hold = hold

    def translate_sources(self, sources, search, *, batch_tokens, source_name):
        self._called(len(sources))
        return [Translation(s.number, [Candidate(" ".join(map(str, s.ids)), s.ids, 0.0, 0.0, None)]) for s in sources]

    def score(self, sources, targets):
        """Each pair's log-probability is minus its target's length; its token count the source's."""
        self._called(len(sources))
        n = len(sources)
        logprob = np.array([-float(len(t)) for t in targets])
        tokens = np.array([len(s) for s in sources])
        return PairScores(
            logprob, tokens, np.zeros(n, dtype=np.int64), np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
        )

    def _called(self, size: int) -> None:
        self.batches.append(size)
        self.started.release()
        if len(self.batches) <= self.hold:
            assert self.release.acquire(timeout=30)


def job(*ids: int) -> TranslateJob:
    return TranslateJob([Source(1, [i]) for i in ids], SearchConfig(beam_size=1))


@contextmanager
def busy(translator: RecordingTranslator, **options) -> Iterator[tuple[Batcher, Future]]:
    """A batcher whose first batch (one request, `job(1)`) is running, held by the translator: what is submitted
    now waits in the queue until `translator.release`."""
    batcher = Batcher(translator, **options)
    try:
        first = batcher.submit(job(1))
        assert translator.started.acquire(timeout=10)
        yield batcher, first
    finally:
        batcher.close()


def test_each_request_gets_its_own_answers_in_order():
    translator = RecordingTranslator(hold=1)
    with busy(translator, max_batch_tokens=100, max_wait_ms=200) as (batcher, first):
        others = [batcher.submit(job(10 * n, 10 * n + 1, 10 * n + 2)) for n in range(1, 5)]
        translator.release.release()
        assert [t.text for t in first.result(timeout=10)] == ["1"]
        for n, future in enumerate(others, start=1):
            got = future.result(timeout=10)
            assert [t.text for t in got] == [str(10 * n), str(10 * n + 1), str(10 * n + 2)]
            assert [t.line for t in got] == [1, 2, 3]  # numbered within the request
        assert translator.batches == [1, 12]  # the four queued while the first ran: one batch


def test_a_lone_request_on_an_idle_server_is_not_kept_waiting():
    translator = RecordingTranslator()
    batcher = Batcher(translator, max_batch_tokens=100, max_wait_ms=5_000)
    try:
        start = time.perf_counter()
        batcher.submit(job(1)).result(timeout=10)
        assert time.perf_counter() - start < 2.0  # far below max_wait
    finally:
        batcher.close()


def test_after_a_batch_of_several_requests_the_next_batch_waits_for_their_clients():
    """Clients just answered together send again a few milliseconds apart: the first of them must not leave
    alone (then the rest would be a second batch, and the batches would alternate between one and many)."""
    translator = RecordingTranslator(hold=2)
    with busy(translator, max_batch_tokens=100, max_wait_ms=1_000) as (batcher, first):
        together = [batcher.submit(job(2)), batcher.submit(job(3))]  # queued while the first runs
        translator.release.release()
        first.result(timeout=10)
        assert translator.started.acquire(timeout=10)  # the batch of two has started
        translator.release.release()
        for future in together:
            future.result(timeout=10)
        # The queue is empty now, but two clients were just answered: they send again, 50 ms apart.
        again = [batcher.submit(job(4))]
        time.sleep(0.05)
        again.append(batcher.submit(job(5)))
        assert [f.result(timeout=10)[0].text for f in again] == ["4", "5"]
        assert translator.batches == [1, 2, 2]


def test_a_batch_waits_no_longer_than_for_the_clients_it_expects():
    """After a batch of two, the next waits for two requests, not for the whole max_wait: once both clients are
    back it starts; and a lone client after a busy spell waits once, then is answered at once."""
    translator = RecordingTranslator(hold=2)
    with busy(translator, max_batch_tokens=100, max_wait_ms=5_000) as (batcher, first):
        together = [batcher.submit(job(2)), batcher.submit(job(3))]
        translator.release.release()
        first.result(timeout=10)
        assert translator.started.acquire(timeout=10)
        translator.release.release()
        for future in together:
            future.result(timeout=10)
        start = time.perf_counter()
        again = [batcher.submit(job(4))]
        time.sleep(0.05)
        again.append(batcher.submit(job(5)))
        for future in again:
            future.result(timeout=10)
        assert time.perf_counter() - start < 2.0 and translator.batches == [1, 2, 2]  # not after 5 s
    translator = RecordingTranslator()
    batcher = Batcher(translator, max_batch_tokens=100, max_wait_ms=300)
    try:
        alone = []
        for n in range(5):
            start = time.perf_counter()
            batcher.submit(job(n)).result(timeout=10)
            alone.append(time.perf_counter() - start)
        assert max(alone) < 0.25 and translator.batches == [1] * 5
    finally:
        batcher.close()


def test_a_batch_waits_for_the_requests_being_prepared():
    """A request whose body has arrived but is not yet submitted (its handler is tokenizing it) is company to
    wait for (up to max_wait); without one, a lone request is answered at once."""
    translator = RecordingTranslator()
    preparing = [0]
    batcher = Batcher(translator, max_batch_tokens=100, max_wait_ms=5_000, preparing=lambda: preparing[0])
    try:
        batcher.submit(job(1)).result(timeout=10)
        preparing[0] = 1
        first = batcher.submit(job(2))
        time.sleep(0.1)
        preparing[0] = 0
        second = batcher.submit(job(3))
        assert [first.result(timeout=10)[0].text, second.result(timeout=10)[0].text] == ["2", "3"]
        assert translator.batches == [1, 2]
    finally:
        batcher.close()


def test_a_request_over_the_token_budget_starts_the_next_batch():
    translator = RecordingTranslator(hold=1)
    with busy(translator, max_batch_tokens=4, max_wait_ms=200) as (batcher, first):
        queued = [batcher.submit(job(2, 3)), batcher.submit(job(4, 5)), batcher.submit(job(6))]
        translator.release.release()
        first.result(timeout=10)
        assert [[t.text for t in f.result(timeout=10)] for f in queued] == [["2", "3"], ["4", "5"], ["6"]]
        assert translator.batches == [1, 4, 1]


def test_a_failing_batch_fails_its_requests_and_the_next_ones_are_served():
    class Failing(RecordingTranslator):
        def translate_sources(self, sources, search, **kwargs):
            if not self.batches:
                self.batches.append(len(sources))
                raise RuntimeError("out of memory")
            return super().translate_sources(sources, search, **kwargs)

    batcher = Batcher(Failing(), max_batch_tokens=100, max_wait_ms=0)
    try:
        with pytest.raises(RuntimeError, match="out of memory"):
            batcher.submit(job(1)).result(timeout=10)
        assert batcher.submit(job(2)).result(timeout=10)[0].text == "2"
    finally:
        batcher.close()


def test_score_and_translate_jobs_queued_together_run_as_one_call_of_each_kind():
    translator = RecordingTranslator(hold=1)
    with busy(translator, max_batch_tokens=100, max_wait_ms=200) as (batcher, first):
        scored = batcher.submit(ScoreJob(["a", "bb"], ["xyz", ""], tokens=6))
        translated = batcher.submit(job(7, 8))
        scored_too = batcher.submit(ScoreJob(["ccc"], ["uv"], tokens=5))
        translator.release.release()
        first.result(timeout=10)
        assert [t.text for t in translated.result(timeout=10)] == ["7", "8"]
        assert scored.result(timeout=10) == [
            {"log_prob": -3.0, "tokens": 1, "truncated": False, "empty": False},
            {"log_prob": -0.0, "tokens": 2, "truncated": False, "empty": False},
        ]
        assert scored_too.result(timeout=10) == [{"log_prob": -2.0, "tokens": 3, "truncated": False, "empty": False}]
        assert translator.batches == [1, 3, 2]  # the two score jobs in one call (first come), the translations in one
