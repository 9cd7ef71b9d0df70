"""One generation at a time on a worker thread, a bounded queue in front of it, progress, interrupt and skip, and the
web UI's task ids (modules/progress.py: the running task, those queued, the last 16 finished)."""

from __future__ import annotations

import math
import secrets
import string
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

import torch

from difflab.samplers.common import Interrupted, StepInfo

T = TypeVar("T")
FIRST_GUESS_SECONDS_PER_STEP = 0.05  # per image and sampler step, until a request has been timed
FINISHED_TASKS = 16  # task ids remembered as completed, as the web UI does


def task_id(kind: str) -> str:
    """A new id in the web UI's form, "task(ABC1234-txt2img)"."""
    return f"task({''.join(secrets.choice(string.ascii_uppercase + string.digits) for _ in range(7))}-{kind})"


class QueueFull(Exception):
    def __init__(self, capacity: int, retry_after: int):
        super().__init__(f"the server is busy ({capacity} requests running or queued); retry in {retry_after} s")
        self.retry_after = retry_after


class Job:
    """Progress of one request (its `task` id, its `kind`: txt2img, or options for a model switch), written by the
    sampler callback and read by GET /sdapi/v1/progress and POST /internal/progress."""

    def __init__(self, job_count: int, steps: int, images_per_job: int, task: str | None = None,
                 kind: str = "txt2img"):
        self.job_count, self.steps, self.images_per_job = job_count, steps, images_per_job
        self.task, self.kind = task or task_id(kind), kind
        self.job_no = self.step = 0
        self.preview: torch.Tensor | None = None  # the first image's current x0_hat
        self.preview_id = 0  # counts the previews, so a client polling by task need not fetch one twice
        self.started: float | None = None  # time.monotonic() when it began running
        self.interrupted = self.skipped = False
        self.parallel: dict[int, tuple[int, int]] = {}  # batch -> (sequential rounds, evaluations per image) so far

    @property
    def units(self) -> int:
        return self.job_count * self.steps * self.images_per_job

    @property
    def fraction(self) -> float:
        return (self.job_no * self.steps + self.step) / (self.job_count * self.steps)

    def report(self, job_no: int, step: StepInfo) -> None:
        """Sampler callback: record the step, or stop the sampler once an interrupt or a skip was asked for."""
        if self.interrupted or self.skipped:
            raise Interrupted
        self.job_no, self.step, self.preview = job_no, step.i + 1, step.x0_hat[0].detach().float().clone()
        self.preview_id += 1
        if step.rounds is not None:  # a parallel sampler (paradigms_*)
            self.parallel[job_no] = (step.rounds, step.nfe)

    def seconds_left(self) -> float:
        if self.started is None or self.fraction == 0:
            return 0.0
        elapsed = time.monotonic() - self.started
        return elapsed / self.fraction - elapsed


class Worker:
    """Runs submitted jobs one at a time, in order; at most `queue_size` wait behind the running one."""

    def __init__(self, queue_size: int):
        self.capacity = queue_size + 1
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="difflab-generate")
        self._lock = threading.Lock()
        self._jobs: list[Job] = []  # running first, then waiting
        self._finished: deque[str] = deque(maxlen=FINISHED_TASKS)
        self._seconds_per_unit = FIRST_GUESS_SECONDS_PER_STEP

    def submit(self, job: Job, run: Callable[[Job], T]) -> Future[T]:
        """Queue run(job); a full queue raises QueueFull with a Retry-After estimate."""
        with self._lock:
            if len(self._jobs) >= self.capacity:
                raise QueueFull(self.capacity, self._retry_after())
            self._jobs.append(job)
        return self._executor.submit(self._run, job, run)

    def _run(self, job: Job, run: Callable[[Job], T]) -> T:
        job.started = time.monotonic()
        try:
            return run(job)
        finally:
            with self._lock:
                self._jobs.remove(job)
                self._finished.append(job.task)
                if job.fraction > 0:
                    self._seconds_per_unit = (time.monotonic() - job.started) / (job.units * job.fraction)

    def _retry_after(self) -> int:
        work = sum(job.units * (1 - job.fraction) for job in self._jobs)
        return max(1, math.ceil(work * self._seconds_per_unit))

    def running(self) -> tuple[Job | None, int]:
        """The running job (None when idle) and how many wait behind it."""
        with self._lock:
            running = [job for job in self._jobs if job.started is not None]
            return (running[0] if running else None), len(self._jobs) - len(running)

    def task(self, task: str | None) -> tuple[Job | None, str | None, bool]:
        """A task's job while it is running or queued (else None), its place among the queued as the UI words it
        ("2/3"; None when not queued), and whether it finished."""
        with self._lock:
            waiting = [job for job in self._jobs if job.started is None]
            job = next((job for job in self._jobs if job.task == task), None)
            place = f"{waiting.index(job) + 1}/{len(waiting)}" if job in waiting else None
            return job, place, task in self._finished

    def interrupt(self) -> bool:
        """Ask the running job to stop after its current step; False when nothing runs."""
        job, _ = self.running()
        if job is not None:
            job.interrupted = True
        return job is not None

    def skip(self) -> bool:
        """Ask the running job to drop its current batch and go on with the next; False when nothing runs."""
        job, _ = self.running()
        if job is not None:
            job.skipped = True
        return job is not None

    def shutdown(self) -> None:
        """Stop the running job, drop the queued ones and wait for the thread."""
        self.interrupt()
        self._executor.shutdown(wait=True, cancel_futures=True)
