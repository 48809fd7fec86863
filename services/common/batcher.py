"""Dynamic batcher: joins the pending steps of concurrent streams into one model forward.

Streams of one model version register with its `BatchGroup`. A submitted step waits until the
group's worker is free and then runs together with every other pending step that has the same
key (step kind and chunk size), up to `max_batch`. It also waits for more streams to join, but no
longer than `max_wait_s`, and not at all once every open stream of the group has a step pending.
Forwards run in one worker thread per model version, so the event loop never blocks and one
model never runs two forwards at once (a busy worker makes the next batch larger instead).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

# run(payloads) -> results, one per payload, in order; executed in the group's worker thread
RunFn = Callable[[Sequence[Any]], Sequence[Any]]
# observe(batch_size, queue_waits_s, compute_s, audio_s) after each forward
ObserveFn = Callable[[int, Sequence[float], float, float], None]


@dataclass
class _Step:
    payload: Any
    audio_s: float
    future: asyncio.Future
    submitted: float = field(default_factory=time.perf_counter)


class BatchGroup:
    """The streams of one model version and their pending steps."""

    def __init__(self, name: str, max_batch: int, max_wait_s: float, observe: ObserveFn) -> None:
        self.name = name
        self._max_batch = max_batch
        self._max_wait = max_wait_s
        self._observe = observe
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"model-{name}")
        self._pending: dict[Hashable, tuple[RunFn, list[_Step]]] = {}
        self._streams = 0
        self._busy = False
        self._timer: asyncio.TimerHandle | None = None

    @property
    def streams(self) -> int:
        return self._streams

    def join(self) -> None:
        self._streams += 1

    def leave(self) -> None:
        self._streams -= 1
        self._maybe_dispatch()  # the streams still waiting may now be all there is

    async def submit(self, key: Hashable, run: RunFn, payload: Any, audio_s: float) -> Any:
        """Run `payload` in a batch with others of the same `key`; returns its result."""
        step = _Step(payload, audio_s, asyncio.get_running_loop().create_future())
        self._pending.setdefault(key, (run, []))[1].append(step)
        self._maybe_dispatch()
        return await step.future

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _waiting(self) -> int:
        return sum(len(steps) for _, steps in self._pending.values())

    def _maybe_dispatch(self) -> None:
        if self._busy or not self._pending:
            return
        for key in list(self._pending):  # drop steps whose stream was cancelled while waiting
            run, steps = self._pending[key]
            steps[:] = [s for s in steps if not s.future.done()]
            if not steps:
                del self._pending[key]
        if not self._pending:
            return
        key = min(self._pending, key=lambda k: self._pending[k][1][0].submitted)
        run, steps = self._pending[key]
        waited = time.perf_counter() - steps[0].submitted
        if (
            len(steps) < self._max_batch
            and self._waiting() < self._streams
            and waited < self._max_wait
        ):
            if self._timer is None:
                self._timer = asyncio.get_running_loop().call_later(
                    self._max_wait - waited, self._on_timer
                )
            return
        batch, rest = steps[: self._max_batch], steps[self._max_batch :]
        if rest:
            self._pending[key] = (run, rest)
        else:
            del self._pending[key]
        self._busy = True
        asyncio.get_running_loop().create_task(self._run(run, batch))

    def _on_timer(self) -> None:
        self._timer = None
        self._maybe_dispatch()

    async def _run(self, run: RunFn, batch: list[_Step]) -> None:
        start = time.perf_counter()
        waits = [start - s.submitted for s in batch]
        try:
            results = await asyncio.get_running_loop().run_in_executor(
                self._executor, run, [s.payload for s in batch]
            )
        except Exception as error:  # noqa: BLE001 - handed to every waiting stream
            for s in batch:
                if not s.future.done():
                    s.future.set_exception(error)
        else:
            compute = time.perf_counter() - start
            self._observe(len(batch), waits, compute, sum(s.audio_s for s in batch))
            for s, result in zip(batch, results, strict=True):
                if not s.future.done():
                    s.future.set_result(result)
        finally:
            self._busy = False
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._maybe_dispatch()
