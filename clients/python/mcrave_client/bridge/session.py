"""One bridge stream: source -> encoder -> (jitter buffer -> OSC clock) and (decoder -> sink).

Threads, each with one job: the feeder sends source blocks (present channels only, a SetPresent
first when the set changed) to the encoder; the latent reader applies the live offsets/scales,
fills the jitter buffer and queues the latents for the decoder feeder (so a slow decoder never
delays the OSC clock, up to 256 queued chunks), each with the present audio that produced it
(the decoder's spatial stage builds the missing channels from it; not with `latent_only`); the
decoded reader writes audio to the sink; the
pacer sends one `/mcrave/latent` per frame period on a steady clock, starting once `prefill`
frames are buffered. A message carries the frame's index in the stream, so a held frame
(underrun) repeats the previous index and a dropped one (overrun) leaves a gap.
"""

from __future__ import annotations

import dataclasses
import queue
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mcrave_client import framing
from mcrave_client.bridge.jitter import JitterBuffer
from mcrave_client.bridge.osc import latent_packets
from mcrave_client.bridge.priority import raise_priority
from mcrave_client.client import DecoderClient, EncoderClient
from mcrave_client.proto import stream_pb2
from mcrave_client.types import Latents, ModelInfo, SetPresent


@dataclass
class LiveControls:
    """What OSC control changes while a stream runs (read by the session threads)."""

    present: tuple[int, ...]
    offset: np.ndarray
    scale: np.ndarray


@dataclass
class SessionStats:
    sent_frames: int = 0  # messages sent, held frames included
    late_ticks: int = 0  # ticks the pacer missed by more than a period (then it re-syncs)
    pacer_priority: str = ""  # what the pacer thread got: "realtime", "nice" or "" (priority.py)
    sent_times: deque = field(default_factory=lambda: deque(maxlen=100_000))  # (new frame, t)
    decoded_times: deque = field(default_factory=lambda: deque(maxlen=100_000))  # (end, t)


class Session:
    def __init__(
        self,
        stream_id: int,
        info: ModelInfo,
        encoder: EncoderClient,
        decoder: DecoderClient | None,
        source: Any,
        sink: Any,
        controls: LiveControls,
        send: Callable[[bytes], None],
        on_end: Callable[[Session, BaseException | None], None],
        chunk: int,
        jitter: int,
        prefill: int,
        latent_only: bool = False,
    ) -> None:
        self.stream_id, self.info, self.controls = stream_id, info, controls
        self.source, self.sink, self._send, self._on_end = source, sink, send, on_end
        self.period = info.ratio / info.sample_rate
        self.prefill = prefill
        self.jitter = JitterBuffer(jitter)
        self.stats = SessionStats()
        self.stop_event = threading.Event()
        self._aborted = False
        self._encoded_all = threading.Event()
        self._error: BaseException | None = None
        spatial = decoder is not None and not latent_only
        self.enc = encoder.stream(info, controls.present, chunk, keep_audio=spatial)
        self.dec = None
        if decoder is not None:
            bound = self.enc.info.model
            present = controls.present if spatial else ()
            try:
                self.dec = decoder.stream(bound.name, chunk, bound.version, present=present)
            except BaseException:
                self.enc.cancel()
                raise
        self._to_decoder: queue.Queue = queue.Queue(maxsize=256)
        jobs = [self._feed, self._read_latents, self._pace]
        if self.dec is not None:
            jobs += [self._feed_decoder, self._read_decoded]
        self._threads = [
            threading.Thread(
                target=self._guard, args=(job,), name=f"bridge-{job.__name__}", daemon=True
            )
            for job in jobs
        ]

    def start(self) -> Session:
        sys.setswitchinterval(min(sys.getswitchinterval(), _SWITCH_INTERVAL_S))
        for thread in self._threads:
            thread.start()
        threading.Thread(target=self._finish, name="bridge-finish", daemon=True).start()
        return self

    def stop(self) -> None:
        """End the input; the tail is flushed and the buffered frames still go out."""
        self.stop_event.set()

    def abort(self) -> None:
        """Stop at once: buffered frames are not sent, the server streams are cancelled."""
        self._aborted = True
        self.stop_event.set()
        self._encoded_all.set()
        self.enc.cancel()
        if self.dec is not None:
            self.dec.cancel()

    def _guard(self, job: Callable[[], None]) -> None:
        try:
            job()
        except BaseException as exc:  # noqa: BLE001 - reported to the OSC peer by on_end
            if self._error is None:
                self._error = exc
            self.abort()

    def _finish(self) -> None:
        for thread in self._threads:
            thread.join()
        if self.sink is not None:
            self.sink.close()
        self._on_end(self, self._error)

    def _feed(self) -> None:
        sent_present = self.controls.present
        for block in self.source.blocks(self.stop_event):
            present = self.controls.present
            if present != sent_present:
                self.enc.send(SetPresent(present))
                sent_present = present
            self.enc.send(np.ascontiguousarray(block[list(present)]))
        self.enc.close_input()

    def _read_latents(self) -> None:
        try:
            index = 0
            for latents in self.enc.results():
                z = latents.array * self.controls.scale[:, None] + self.controls.offset[:, None]
                for frame in z.T:
                    self.jitter.push((index, frame))
                    index += 1
                if self.dec is not None:
                    chunk = stream_pb2.LatentChunk()
                    chunk.CopyFrom(latents.chunk)
                    chunk.data = framing.pack(z)
                    self._queue_for_decoder(dataclasses.replace(latents, array=z, chunk=chunk))
        finally:
            self._encoded_all.set()
            if self.dec is not None:
                self._queue_for_decoder(None)

    def _queue_for_decoder(self, item: Latents | None) -> None:
        while self._error is None:  # a failed decoder feeder no longer drains the queue
            try:
                self._to_decoder.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def _feed_decoder(self) -> None:
        """Forward latents to the decoder in its own thread: a slow decoder delays the decoded
        audio but never the OSC latents."""
        while (latents := self._to_decoder.get()) is not None:
            self.dec.send(latents)
        self.dec.close_input()

    def _read_decoded(self) -> None:
        end = 0
        for block in self.dec.results():
            end += block.audio.shape[1]
            self.stats.decoded_times.append((end, time.perf_counter()))
            if self.sink is not None:
                self.sink.write(block.audio)

    def _pace(self) -> None:
        """One message per frame period on the steady clock: sleep until just before the tick,
        take the frame and build its packets, spin to the tick, send."""
        self.stats.pacer_priority = raise_priority(threading.get_native_id())
        while len(self.jitter) < self.prefill and not self._encoded_all.wait(0.001):
            pass
        self._last_index = -1
        tick = time.perf_counter()
        while not self._aborted and not (self._encoded_all.is_set() and len(self.jitter) == 0):
            _sleep_until(tick - _SPIN_S)
            item = self.jitter.pop()
            packets = () if item is None else latent_packets(self.stream_id, item[0], item[1])
            _spin_until(tick)
            for packet in packets:
                self._send(packet)
            if item is not None:
                if item[0] > self._last_index:  # a new frame, not a held one
                    self.stats.sent_times.append((item[0], time.perf_counter()))
                    self._last_index = item[0]
                self.stats.sent_frames += 1
            tick += self.period
            if tick < time.perf_counter() - self.period:
                # stalled (e.g. the machine paused us): re-sync the clock
                self.stats.late_ticks += 1
                tick = time.perf_counter()


# time.sleep overshoots by up to ~1 ms on a busy machine: the pacer wakes this long before a tick
# and spins the rest (on sleep(0), which releases the GIL)
_SPIN_S = 0.001
# a thread waiting for the GIL gets it after at most this long (Python's default is 5 ms,
# which a pacer thread waking up behind a busy reader thread would feel as jitter)
_SWITCH_INTERVAL_S = 0.0005


def _sleep_until(deadline: float) -> None:
    delay = deadline - time.perf_counter()
    if delay > 0:
        time.sleep(delay)


def _spin_until(deadline: float) -> None:
    while time.perf_counter() < deadline:
        time.sleep(0)
