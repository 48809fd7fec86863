"""Dynamic batcher: joins the pending steps of concurrent streams into one model forward.

Streams of one model version register with its `BatchGroup`. A submitted step waits until the
group's worker is free and then runs together with every other pending step that has the same
key (step kind and chunk size), up to `max_batch`. It also waits for more streams to join, but no
longer than `max_wait_s`, and not at all once every open stream of the group has a step pending
(so a lone stream never waits). Forwards run in one worker thread per model version, so the
event loop never blocks and one model never runs two forwards at once (a busy worker makes the
next batch larger instead).

A batch goes straight to the worker, and the worker hands the results back with one
`call_soon_threadsafe` that resolves every step of the batch (no task in between, which would
add a loop pass on each side of the forward). Those two thread hops cost ~0.1-0.3 ms each on a
small machine, and a forward in the worker hands the GIL back and forth with the loop thread
dozens of times (each handoff may wait for Python's switch interval), so when the server has a
single open stream (`alone()`) its forward runs on the loop instead: nothing else is there to
serve meanwhile but health checks and new calls, which wait at most one step. A step its caller
marks `last` (a stream chunk of one step) then returns at once, without the two loop passes of
a future (~0.04 ms each here, on both services of every chunk); other steps (a clip's) are
delivered on the next loop pass, so a clip of many steps never holds the loop for more than one.

A forward in the worker takes and releases the GIL many times, and each time the loop thread
holds it the worker may wait a whole switch interval (Python's default: 5 ms; measured on a
stereo cpu-small step with a busy second thread: 69x slower, 4.6x at 0.5 ms). So the first group
lowers the process' switch interval to `SWITCH_INTERVAL_S`.

Metrics are observed on the loop pass after the results are handed out, so they never delay
a stream's reply.

`MCRAVE_STEP_TRACE=FILE` (off by default; bench/service_bench.py sets it) appends one JSON line
per step to FILE: process id, group, batch size and the `time.perf_counter()` stamps submitted,
dispatched, started and ended (the forward) and resumed (the stream's coroutine has the
result). Records are kept in memory and written when the group has no stream left or closes,
so writing them costs a stream nothing. On Linux that clock is CLOCK_MONOTONIC, shared by every
process of the machine, so a client on the same machine can lay its own stamps beside them.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

# run(payloads) -> results, one per payload, in order; executed in the group's worker thread
RunFn = Callable[[Sequence[Any]], Sequence[Any]]
# observe(batch_size, queue_waits_s, compute_s, audio_s) after each forward
ObserveFn = Callable[[int, Sequence[float], float, float], None]

_TRACE_PATH = os.environ.get("MCRAVE_STEP_TRACE")
SWITCH_INTERVAL_S = 0.0005


@dataclass
class _Step:
    payload: Any
    audio_s: float
    future: asyncio.Future | None  # None: run inline (`BatchGroup.submit`'s fast path)
    submitted: float = field(default_factory=time.perf_counter)
    dispatched: float = 0.0
    batch: int = 0
    forward: tuple[float, float] = (0.0, 0.0)  # started, ended in the worker


class BatchGroup:
    """The streams of one model version and their pending steps."""

    def __init__(
        self,
        name: str,
        max_batch: int,
        max_wait_s: float,
        observe: ObserveFn,
        alone: Callable[[], bool] = lambda: False,
    ) -> None:
        """`alone()`: whether this group's stream is the only open stream of the server."""
        sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL_S))
        self.name = name
        self._alone = alone
        self._max_batch = max_batch
        self._max_wait = max_wait_s
        self._observe = observe
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"model-{name}")
        self._pending: dict[Hashable, tuple[RunFn, list[_Step]]] = {}
        self._streams = 0
        self._busy = False
        self._timer: asyncio.TimerHandle | None = None
        self._trace: list[dict] = []

    @property
    def streams(self) -> int:
        return self._streams

    def join(self) -> None:
        self._streams += 1

    def leave(self) -> None:
        self._streams -= 1
        if not self._streams:
            self._flush_trace()
        self._maybe_dispatch()  # the streams still waiting may now be all there is

    async def submit(
        self, key: Hashable, run: RunFn, payload: Any, audio_s: float, *, last: bool = False
    ) -> Any:
        """Run `payload` in a batch with others of the same `key`; returns its result. `last`:
        the caller awaits nothing else right after (a lone stream's step may run inline)."""
        if last and not self._busy and not self._pending and self._streams == 1 and self._alone():
            return self._run_inline(run, _Step(payload, audio_s, None))
        step = _Step(payload, audio_s, asyncio.get_running_loop().create_future())
        self._pending.setdefault(key, (run, []))[1].append(step)
        self._maybe_dispatch()
        result = await step.future
        if _TRACE_PATH:
            self._record(step, time.perf_counter())
        return result

    def _run_inline(self, run: RunFn, step: _Step) -> Any:
        """The lone stream's step, here and now: no future, no loop pass."""
        step.dispatched = step.submitted
        results, error, started, ended = _forward(run, [step])
        step.batch, step.forward = 1, (started, ended)
        if error is not None:
            raise error
        asyncio.get_running_loop().call_soon(
            self._observe, 1, [started - step.submitted], ended - started, step.audio_s
        )
        if _TRACE_PATH:
            self._record(step, time.perf_counter())
        return results[0]

    def close(self) -> None:
        self._flush_trace()
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
        now = time.perf_counter()
        waited = now - steps[0].submitted
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
        for s in batch:
            s.dispatched = now
        self._busy = True
        loop = asyncio.get_running_loop()
        if self._streams == 1 and self._alone():
            loop.call_soon(self._finished, batch, *_forward(run, batch))
        else:
            self._executor.submit(self._in_worker, loop, run, batch)

    def _on_timer(self) -> None:
        self._timer = None
        self._maybe_dispatch()

    def _in_worker(self, loop: asyncio.AbstractEventLoop, run: RunFn, batch: list[_Step]) -> None:
        outcome = _forward(run, batch)
        try:
            loop.call_soon_threadsafe(self._finished, batch, *outcome)
        except RuntimeError:  # the loop is closed (server gone): nobody waits for this batch
            pass

    def _finished(
        self,
        batch: list[_Step],
        results: Sequence[Any],
        error: Exception | None,
        started: float,
        ended: float,
    ) -> None:
        self._busy = False
        if error is None:
            waits = [started - s.submitted for s in batch]
            audio_s = sum(s.audio_s for s in batch)
            asyncio.get_running_loop().call_soon(
                self._observe, len(batch), waits, ended - started, audio_s
            )
        for i, s in enumerate(batch):
            s.batch, s.forward = len(batch), (started, ended)
            if s.future.done():  # its stream was cancelled meanwhile
                continue
            if error is not None:
                s.future.set_exception(error)
            else:
                s.future.set_result(results[i])
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._maybe_dispatch()

    def _record(self, step: _Step, resumed: float) -> None:
        started, ended = step.forward
        self._trace.append(
            {
                "pid": os.getpid(),
                "group": self.name,
                "batch": step.batch,
                "submitted": step.submitted,
                "dispatched": step.dispatched,
                "started": started,
                "ended": ended,
                "resumed": resumed,
            }
        )

    def _flush_trace(self) -> None:
        if self._trace:
            with open(_TRACE_PATH, "a") as out:
                out.writelines(json.dumps(r) + "\n" for r in self._trace)
            self._trace.clear()


def _forward(
    run: RunFn, batch: list[_Step]
) -> tuple[Sequence[Any], Exception | None, float, float]:
    """One forward of `batch`: (results, error, started, ended)."""
    started = time.perf_counter()
    results: Sequence[Any] = ()
    error: Exception | None = None
    try:
        results = run([s.payload for s in batch])
        if len(results) != len(batch):
            raise RuntimeError(f"batch of {len(batch)} steps gave {len(results)} results")
    except Exception as exc:  # noqa: BLE001 - handed to every waiting stream
        error = exc
    return results, error, started, time.perf_counter()
