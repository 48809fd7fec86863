"""The bridge's OSC control plane: one UDP socket (127.0.0.1 unless told) in, status out.

Addresses (all under /mcrave):
  in   /present i...     N flags (1 = channel sent to the encoder), applied at the next chunk
       /model s          model name (restarts a running stream)
       /version i        model version, 0 = latest (restarts a running stream)
       /start, /stop     open a stream / end it (the tail is flushed, buffered frames still sent)
       /offset f...      D offsets added to the latents, or `i f` for one dimension
       /scale f...       D factors the latents are multiplied by, or `i f` for one dimension
       /status           ask for a status message
       /audio f... | b   audio from Max: interleaved N-channel float frames, or an f32le blob
  out  /latent i:stream i:frame f...D          one per frame on the frame clock
       /latent/part i:stream i:frame i:offset f...   when D floats exceed one 8192-byte packet
       (frame = index in the stream: repeated when a frame is held on underrun, skipped when the
       oldest is dropped on overrun)
       /status s:state s:model i:version i:stream i:sent i:underruns i:overruns i...N present
       /error s:address s:message
Status and errors go to the sender of the message that caused them and to `--send` (Max's
`udpreceive`, since Max's `udpsend` cannot receive on its source port).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from mcrave_client import framing
from mcrave_client.bridge import osc
from mcrave_client.bridge.session import LiveControls, Session
from mcrave_client.client import DecoderClient, EncoderClient
from mcrave_client.errors import ClientError
from mcrave_client.pipeline import choose_model
from mcrave_client.types import ModelInfo

log = logging.getLogger("mcrave.bridge")
Address = tuple[str, int]


# what the bridge answers to and what it sends (the Max patches and their lint test use these)
CONTROL_ADDRESSES = (
    "/mcrave/present",
    "/mcrave/model",
    "/mcrave/version",
    "/mcrave/start",
    "/mcrave/stop",
    "/mcrave/offset",
    "/mcrave/scale",
    "/mcrave/status",
    "/mcrave/audio",
)
OUTPUT_ADDRESSES = (osc.LATENT, osc.LATENT_PART, "/mcrave/status", "/mcrave/error")
LATENT_HEADER_INTS = 2  # /mcrave/latent stream frame, then the D floats
DEFAULT_CONTROL_PORT, DEFAULT_SEND_PORT = 9000, 7400


class ControlError(ClientError):
    """A control message that cannot be applied; answered with /mcrave/error."""


class Bridge:
    """OSC control + the current Session. `serve()` runs the control loop until `close()`."""

    def __init__(
        self,
        encoder: EncoderClient,
        decoder: DecoderClient | None,
        *,
        model: str | None,
        present: tuple[int, ...],
        make_source: Callable[[ModelInfo, int], Any],
        make_sink: Callable[[ModelInfo], Any] | None = None,
        send_to: Address | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        chunk_frames: int = 1,
        jitter: int | None = None,
        prefill: int | None = None,
        version: int = 0,
        latent_only: bool = False,
        info: ModelInfo | None = None,
    ) -> None:
        self.encoder, self.decoder = encoder, decoder
        self.latent_only = latent_only  # the decoder gets latents alone, no present audio
        self.model, self.version, self.present = model, version, tuple(present)
        self.make_source, self.make_sink = make_source, make_sink
        self.send_to = send_to
        self.chunk_frames = chunk_frames  # latent frames per chunk sent to the encoder
        self.jitter = jitter or 2 * chunk_frames + 2
        self.prefill = prefill or chunk_frames + 1
        self.endpoint = osc.Endpoint(host, port)
        self.info = info  # looked up at the first need when not given
        self.session: Session | None = None
        self.state = "idle"
        self.stream_id = 0
        self.offset: dict[int, float] | np.ndarray = {}
        self.scale: dict[int, float] | np.ndarray = {}
        self.ended = threading.Event()  # set whenever a session ends
        self.last_error: BaseException | None = None
        self.last_session: Session | None = None  # its counters stay in the status
        self._lock = threading.RLock()
        self._closed = threading.Event()
        self._last_sender: Address | None = None
        self.handlers: dict[str, Callable[[list[Any]], None]] = {
            "/mcrave/present": self._present,
            "/mcrave/model": self._model,
            "/mcrave/version": self._version,
            "/mcrave/start": self._start,
            "/mcrave/stop": self._stop,
            "/mcrave/offset": lambda args: self._vector("offset", args),
            "/mcrave/scale": lambda args: self._vector("scale", args),
            "/mcrave/status": lambda args: self._expect(args, 0, "takes no arguments"),
            "/mcrave/audio": self._audio,
        }

    # -- control loop -------------------------------------------------------------------------
    @property
    def address(self) -> Address:
        return self.endpoint.address

    def serve(self) -> None:
        """Handle control messages until `close()`; the socket closes when this returns."""
        try:
            while not self._closed.is_set():
                got = self.endpoint.recv()
                if got is not None:
                    self.handle(*got)
        finally:
            self.endpoint.close()

    def handle(self, datagram: bytes, sender: Address) -> None:
        """Apply every message in one datagram; each bad one is answered with /mcrave/error."""
        self._last_sender = sender
        try:
            messages = osc.parse(datagram)
        except osc.MalformedPacket as exc:
            self.error("?", str(exc), sender)
            return
        for address, args in messages:
            handler = self.handlers.get(address)
            try:
                if handler is None:
                    raise ControlError(f"unknown address; known: {' '.join(sorted(self.handlers))}")
                with self._lock:
                    handler(args)
            except (ControlError, ClientError) as exc:
                self.error(address, str(exc), sender)
                continue
            if address != "/mcrave/audio":
                self.status(sender)

    def handle_local(self, address: str, *args: Any) -> None:
        """Apply a control message from this process (e.g. `--start`); errors are raised."""
        with self._lock:
            self.handlers[address](list(args))

    def close(self) -> None:
        with self._lock:
            if self.session is not None:
                self.session.abort()
        self._closed.set()  # serve() sees it within its receive timeout and closes the socket

    # -- replies ------------------------------------------------------------------------------
    def _reply(self, datagram: bytes, sender: Address | None) -> None:
        if self._closed.is_set():
            return
        for target in {t for t in (sender, self.send_to) if t is not None}:
            try:
                self.endpoint.send(datagram, target)
            except OSError as exc:
                log.warning("cannot send to %s: %s", target, exc)

    def error(self, address: str, message: str, sender: Address | None = None) -> None:
        log.warning("%s: %s", address, message)
        self._reply(osc.build("/mcrave/error", address, message), sender or self._last_sender)

    def status(self, sender: Address | None = None) -> None:
        session = self.session or self.last_session
        sent = session.stats.sent_frames if session else 0
        under = session.jitter.underruns if session else 0
        over = session.jitter.overruns if session else 0
        flags = [int(i in self.present) for i in range(self._channels_if_known())]
        version = session.info.ref.version if session else self.version  # the bound version
        message = osc.build(
            "/mcrave/status",
            self.state,
            self.model or "",
            version,
            self.stream_id,
            sent,
            under,
            over,
            *flags,
        )
        self._reply(message, sender or self._last_sender)

    def send_latent(self, datagram: bytes) -> None:
        if self.send_to is not None and not self._closed.is_set():
            self.endpoint.send(datagram, self.send_to)

    # -- handlers -----------------------------------------------------------------------------
    @staticmethod
    def _expect(args: list[Any], count: int, what: str) -> None:
        if len(args) != count:
            raise ControlError(f"{what}, got {len(args)} arguments")

    def _present(self, args: list[Any]) -> None:
        n = self._model_info().channels
        if len(args) != n or not all(isinstance(a, int | float) and a in (0, 1) for a in args):
            raise ControlError(f"expects {n} flags of 0 or 1 (one per channel), got {args}")
        present = tuple(i for i, flag in enumerate(args) if flag)
        if not present:
            raise ControlError("at least one channel must be present")
        self.present = present
        if self.session is not None:
            self.session.controls.present = present

    def _model(self, args: list[Any]) -> None:
        if len(args) != 1 or not isinstance(args[0], str) or not args[0]:
            raise ControlError("expects one model name (string)")
        self._switch(args[0], 0)

    def _version(self, args: list[Any]) -> None:
        if len(args) != 1 or not isinstance(args[0], int) or args[0] < 0:
            raise ControlError("expects one version number (int >= 0; 0 = latest)")
        self._switch(self.model, args[0])

    def _switch(self, model: str | None, version: int) -> None:
        info = self._lookup(model, version)
        running = self.session is not None
        if running:
            self.session.abort()
            self.session = None
        self.model, self.version, self.info = info.ref.name, version, info
        self.offset, self.scale = {}, {}
        if running:
            self._start([])

    def _start(self, args: list[Any]) -> None:
        self._expect(args, 0, "takes no arguments")
        if self.session is not None:
            raise ControlError("already running; send /mcrave/stop first")
        info = self._model_info()
        if max(self.present) >= info.channels:
            raise ControlError(f"present {list(self.present)} out of range for {info.channels}")
        chunk = self.chunk_frames * info.ratio
        self.stream_id += 1
        controls = LiveControls(self.present, *self._live_vectors(info))
        source = self.make_source(info, chunk)
        sink = self.make_sink(info) if self.make_sink else None
        self.ended.clear()
        self.session = Session(
            self.stream_id,
            info,
            self.encoder,
            self.decoder,
            source,
            sink,
            controls,
            self.send_latent,
            self._ended,
            chunk,
            self.jitter,
            self.prefill,
            self.latent_only,
        ).start()
        self.state = "running"

    def _stop(self, args: list[Any]) -> None:
        self._expect(args, 0, "takes no arguments")
        if self.session is None:
            raise ControlError("not running")
        self.session.stop()
        self.state = "stopping"

    def _ended(self, session: Session, error: BaseException | None) -> None:
        with self._lock:
            self.last_session = session
            current = self.session is session  # not a stream replaced by /model or /version
            if current:
                self.session = None
                self.state = "error" if error else "stopped"
        if not current:
            return
        if error is not None:
            self.last_error = error
            self.error("/mcrave/start", " ".join(str(error).split()))
        self.status()
        self.ended.set()

    def _vector(self, kind: str, args: list[Any]) -> None:
        d = self._model_info().latent_size
        current = getattr(self, kind)
        if len(args) == 2 and isinstance(args[0], int) and isinstance(args[1], int | float):
            if not 0 <= args[0] < d:
                raise ControlError(f"dimension {args[0]} out of range for {d} latent dimensions")
            values = dict(enumerate(current)) if isinstance(current, np.ndarray) else current
            setattr(self, kind, {**values, args[0]: float(args[1])})
        elif len(args) == d and all(isinstance(a, int | float) for a in args):
            setattr(self, kind, np.asarray(args, np.float32))
        else:
            raise ControlError(f"expects {d} numbers, or a dimension index and one number")
        if self.session is not None:
            offset, scale = self._live_vectors(self.info)
            self.session.controls.offset, self.session.controls.scale = offset, scale

    def _live_vectors(self, info: ModelInfo) -> tuple[np.ndarray, np.ndarray]:
        out = []
        for kind, default in (("offset", 0.0), ("scale", 1.0)):
            values = getattr(self, kind)
            if isinstance(values, np.ndarray):
                out.append(values.copy())
            else:
                vec = np.full(info.latent_size, default, np.float32)
                for dim, value in values.items():
                    vec[dim] = value
                out.append(vec)
        return out[0], out[1]

    def _audio(self, args: list[Any]) -> None:
        source = self.session.source if self.session else None
        if not getattr(source, "from_osc", False):
            raise ControlError("no stream takes audio from OSC (start with --audio-from-max)")
        n = self.info.channels
        if len(args) == 1 and isinstance(args[0], bytes):
            source.feed(framing.unpack(args[0], n))
        elif args and len(args) % n == 0 and all(isinstance(a, int | float) for a in args):
            source.feed(np.asarray(args, np.float32).reshape(-1, n).T)
        else:
            raise ControlError(f"expects interleaved {n}-channel float frames or one f32le blob")

    # -- model lookup -------------------------------------------------------------------------
    def _lookup(self, model: str | None, version: int) -> ModelInfo:
        return lookup_model(self.encoder, model, version)

    def _channels_if_known(self) -> int:
        """N for the status flags, asking the encoder if need be; 0 while it is unreachable."""
        try:
            return self._model_info().channels
        except ClientError:
            return 0

    def _model_info(self) -> ModelInfo:
        if self.info is None:
            self.info = self._lookup(self.model, self.version)
            self.model = self.info.ref.name
        return self.info


def lookup_model(encoder: EncoderClient, model: str | None, version: int) -> ModelInfo:
    """The named model (version 0 = latest), or the encoder's only one when unnamed."""
    if model is None:
        return choose_model(encoder.list_models(), encoder.connection.target)
    return encoder.get_model(model, version)
