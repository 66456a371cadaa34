"""Requests from many clients decoded together: one thread owns the model and takes the queued requests in
batches.

A request is a job: a `TranslateJob` (the lines of one HTTP request, encoded by its handler, with its search
settings) or a `ScoreJob` (its pairs to score). The worker thread takes the first job in the queue and every other
job already queued, up to `max_batch_tokens` pieces, groups them by what they ask for (translations with one
`SearchConfig`, or scores) and runs each group as one call of `nmt.Translator`, which sorts the lines by length
into token batches. Each job gets its own results back, in its own order, through a `concurrent.futures.Future`
its HTTP handler awaits.

A batch waits for more requests (up to `max_wait_ms`) only while company is expected: as many requests as the
previous batch held (the clients just answered are about to send again; without the wait the first of them
would leave alone, and the batches would alternate between one request and all the others), or as many as
are queued or being prepared by their handlers (`preparing`: body read, not yet submitted). It stops waiting
as soon as the batch holds that many, so a lone client (the previous batch held one request, nothing else
in flight) is answered at once.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field

from nmt.data.encoding import Source
from nmt.decoding import SearchConfig
from nmt.inference import Translation, Translator
from nmt.scoring.scorer import PairScores

_STOP = object()


@dataclass(eq=False)
class TranslateJob:
    """One request's lines (`nmt.data.encoding.encode_sources`, numbered from 1) to translate with `search`."""

    sources: list[Source]
    search: SearchConfig
    result: Future = field(default_factory=Future)  # its translations, in order

    @property
    def tokens(self) -> int:
        """Source pieces (a blank line counts one), what counts against max_batch_tokens."""
        return sum(max(1, len(s.ids)) for s in self.sources)

    @property
    def size(self) -> int:
        return len(self.sources)

    @property
    def kind(self) -> tuple:
        """Jobs of one kind run as one call of the translator: translations with one `SearchConfig`."""
        return ("translate", *dataclasses.astuple(self.search))


@dataclass(eq=False)
class ScoreJob:
    """One request's (source, target) pairs to score."""

    sources: list[str]
    targets: list[str]
    tokens: int  # source and target pieces, what counts against max_batch_tokens
    result: Future = field(default_factory=Future)  # a dict of each pair's score and flags, in order

    @property
    def size(self) -> int:
        return len(self.sources)

    @property
    def kind(self) -> tuple:
        return ("score",)


Job = TranslateJob | ScoreJob


@dataclass
class BatchStats:
    """What one batch held, for the metrics."""

    jobs: int
    sentences: int
    tokens: int
    seconds: float


class Batcher:
    """The one thread that runs the model; `submit` is safe from any thread (the event loop's)."""

    def __init__(
        self,
        translator: Translator,
        *,
        max_batch_tokens: int,
        max_wait_ms: float,
        on_batch: Callable[[BatchStats], None] = lambda stats: None,
        preparing: Callable[[], int] = lambda: 0,
    ) -> None:
        self.translator = translator
        self.preparing = preparing  # requests about to be submitted (the handlers count them)
        self.max_batch_tokens = max_batch_tokens
        self.max_wait = max_wait_ms / 1000
        self.on_batch = on_batch
        self._queue: queue.Queue = queue.Queue()
        self._held: Job | None = None  # taken from the queue but over the budget: first in the next batch
        self._thread = threading.Thread(target=self._run, name="nmt-serve-batcher", daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> Future:
        self._queue.put(job)
        return job.result

    @property
    def queued(self) -> int:
        return self._queue.qsize() + (self._held is not None)

    def close(self) -> None:
        """Let the batch in progress finish, drop the jobs still queued, then end the thread. The server closes
        it once every request was answered, or cancelled after its grace period: nobody waits for those jobs."""
        while True:
            try:
                dropped = self._queue.get_nowait()
            except queue.Empty:
                break
            if dropped is not _STOP:
                dropped.result.cancel()
        self._queue.put(_STOP)
        self._thread.join()

    # -- the worker thread ---------------------------------------------------------------------------------------

    def _run(self) -> None:
        answered = 0  # requests in the previous batch: clients that may be about to send again
        while True:
            jobs = self._gather(expected=answered)
            if not jobs:
                return
            start = time.perf_counter()
            try:
                for group in _groups(jobs):
                    self._work(group)
            except BaseException as error:  # the thread must outlive any request, or every later one would hang
                for job in jobs:
                    if not job.result.done():
                        job.result.set_exception(error)
            self.on_batch(
                BatchStats(
                    jobs=len(jobs),
                    sentences=sum(j.size for j in jobs),
                    tokens=sum(j.tokens for j in jobs),
                    seconds=time.perf_counter() - start,
                )
            )
            answered = len(jobs)

    def _gather(self, *, expected: int) -> list[Job]:
        """The next batch: the first job (waiting for it), then what is queued within the token budget, and what
        arrives within max_wait while fewer than `expected` jobs (or fewer than are being prepared) are in it.
        Empty once `close` was called and everything is done."""
        if self._held is not None:
            first, self._held = self._held, None
        else:
            first = self._queue.get()
            if first is _STOP:
                return []
        jobs, tokens = [first], first.tokens
        deadline = time.monotonic() + self.max_wait
        while tokens < self.max_batch_tokens:
            company = len(jobs) < max(expected, len(jobs) + self.preparing())
            remaining = deadline - time.monotonic() if company else 0.0
            try:
                job = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if job is _STOP:
                self._queue.put(_STOP)  # seen again once the jobs before it are done
                break
            if tokens + job.tokens > self.max_batch_tokens:
                self._held = job
                break
            jobs.append(job)
            tokens += job.tokens
        return jobs

    def _work(self, jobs: Sequence[Job]) -> None:
        """One call of the translator for jobs of one kind; each gets its own slice back."""
        try:
            if isinstance(jobs[0], ScoreJob):
                sources = [line for job in jobs for line in job.sources]
                scores = self.translator.score(sources, [t for job in jobs for t in job.targets])
                results: list = [_slice_scores(scores, i) for i in range(len(sources))]
            else:  # numbered across the batch; each job's are numbered from 1 again below
                numbered = enumerate((s for job in jobs for s in job.sources), start=1)
                results = self.translator.translate_sources(
                    [Source(n, s.ids) for n, s in numbered],
                    jobs[0].search,
                    batch_tokens=self.max_batch_tokens,
                    source_name="request",
                )
        except Exception as error:  # every waiting request learns what went wrong
            for job in jobs:
                _settle(job.result, exception=error)
            return
        start = 0
        for job in jobs:
            _settle(job.result, result=_renumbered(results[start : start + job.size]))
            start += job.size


def _settle(future: Future, *, result: object = None, exception: BaseException | None = None) -> None:
    """A job's answer, unless its request was cancelled meanwhile (a server stopping after its grace period)."""
    try:
        if exception is not None:
            future.set_exception(exception)
        else:
            future.set_result(result)
    except InvalidStateError:
        pass


def _groups(jobs: Sequence[Job]) -> list[list[Job]]:
    """Jobs by what they ask for, in the order each kind first came."""
    groups: dict[tuple, list[Job]] = {}
    for job in jobs:
        groups.setdefault(job.kind, []).append(job)
    return list(groups.values())


def _slice_scores(scores: PairScores, i: int) -> dict:
    return {
        "log_prob": float(scores.logprob[i]),
        "tokens": int(scores.n_tokens[i]),
        "truncated": bool(scores.truncated[i]),
        "empty": bool(scores.empty[i]),
    }


def _renumbered(results: list) -> list:
    """A job's translations numbered from 1 within the job (they were numbered within the batch)."""
    return [r._replace(line=n) if isinstance(r, Translation) else r for n, r in enumerate(results, start=1)]
