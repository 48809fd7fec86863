"""Where decoded audio goes: an audio device (or JACK through PortAudio) or a file."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from mcrave_client.errors import ClientError
from mcrave_client.infer import default_file_mode

AUDIO_HINT = "install them with `pip install 'mcrave-client[audio]'` and your system's PortAudio (Debian: libportaudio2)"


class FileSink:
    """Appends decoded blocks to a file that appears (atomically renamed) when closed; the first
    `skip` frames (the model latency) are dropped, so the file lines up with the input."""

    def __init__(self, path: str, channels: int, sample_rate: int, skip: int = 0) -> None:
        self.path = Path(path)
        self._skip = skip
        if not self.path.parent.is_dir():
            raise ClientError(f"{path}: folder {self.path.parent} does not exist")
        fd, self._tmp = tempfile.mkstemp(
            prefix=f".{self.path.name}.", suffix=".wav", dir=self.path.parent
        )
        os.close(fd)
        self._file = sf.SoundFile(
            self._tmp, "w", sample_rate, channels, subtype="FLOAT", format="WAV"
        )
        self.frames = 0

    def write(self, block: np.ndarray) -> None:
        dropped = min(self._skip, block.shape[1])
        self._skip -= dropped
        self._file.write(block[:, dropped:].T)
        self.frames += block.shape[1] - dropped

    def close(self) -> None:
        self._file.close()
        with open(self._tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.chmod(self._tmp, default_file_mode())  # mkstemp makes 0600; the file gets the usual mode
        os.replace(self._tmp, self.path)


class DeviceSink:
    """Plays decoded blocks on an output device (blocking writes pace the decoder stream)."""

    def __init__(self, channels: int, sample_rate: int, device: str | None) -> None:
        try:
            import sounddevice
        except (ImportError, OSError) as exc:
            raise ClientError(
                f"audio output needs sounddevice and PortAudio ({exc}); {AUDIO_HINT}"
            ) from None
        self._stream = sounddevice.OutputStream(
            samplerate=sample_rate, channels=channels, dtype="float32", device=device
        )
        self._stream.start()
        self.frames = 0

    def write(self, block: np.ndarray) -> None:
        self._stream.write(np.ascontiguousarray(block.T))
        self.frames += block.shape[1]

    def close(self) -> None:
        self._stream.stop()
        self._stream.close()
