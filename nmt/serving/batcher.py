"""Requests from many clients decoded together: one thread owns the model and takes the queued requests in
batches.

A request is a job: a `TranslateJob` (the lines of one HTTP request, encoded by its handler, with its search
settings) or a `ScoreJob` (its pairs to score). The worker thread takes the first job in the queue and every other
job already queued, up to `max_batch_tokens` pieces, groups them by what they ask for (translations with one
`SearchConfig`, or scores) and runs each group as one call of `nmt.Translator`, which sorts the lines by length
into token batches. Each job gets its own results back, in its own order, through a `concurrent.futures.Future`
its HTTP handler awaits.

Waiting for more requests (`max_wait_ms`) happens only under load, when the previous batch held several
requests or others were queued as it ended: then the clients just answered are about to send again, and the
wait gathers them into the next batch (without it the first of them would leave alone, and the batches would
alternate between one request and all the others). An idle server answers a lone request at once.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
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
    ) -> None:
        self.translator = translator
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
        """Finish the jobs already submitted, then end the thread."""
        self._queue.put(_STOP)
        self._thread.join()

    # -- the worker thread ---------------------------------------------------------------------------------------

    def _run(self) -> None:
        under_load = False
        while True:
            jobs = self._gather(wait_for_more=under_load)
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
            # Busy: several clients were just answered (they are about to send again) or requests are waiting.
            under_load = len(jobs) > 1 or not self._queue.empty() or self._held is not None

    def _gather(self, *, wait_for_more: bool) -> list[Job]:
        """The next batch: the first job (waiting for it), then what is queued within the token budget; under
        load, also what arrives within max_wait. Empty once `close` was called and everything is done."""
        if self._held is not None:
            first, self._held = self._held, None
        else:
            first = self._queue.get()
            if first is _STOP:
                return []
        jobs, tokens = [first], first.tokens
        deadline = time.monotonic() + (self.max_wait if wait_for_more else 0.0)
        while tokens < self.max_batch_tokens:
            remaining = deadline - time.monotonic()
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
                job.result.set_exception(error)
            return
        start = 0
        for job in jobs:
            job.result.set_result(_renumbered(results[start : start + job.size]))
            start += job.size


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
