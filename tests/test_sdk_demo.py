"""The README's first command: scripts/demo.sh runs the whole encoder -> decoder demo."""

from __future__ import annotations

import re
import socket
import subprocess

import numpy as np
import pytest
import soundfile as sf
from sdk_helpers import REPO


@pytest.mark.slow
def test_demo_streams_right_channel_and_writes_stereo(tmp_path):
    out = tmp_path / "inferred.wav"
    run = subprocess.run(
        ["bash", str(REPO / "scripts" / "demo.sh"), "", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    audio, rate = sf.read(out, dtype="float32", always_2d=True)
    assert audio.shape == (4 * rate, 2) and np.isfinite(audio).all() and np.abs(audio).max() > 0
    assert "present [1]" in run.stdout
    assert "present [1], spatial" in run.stdout and "present [1], latent-only" in run.stdout
    latent, _ = sf.read(tmp_path / "inferred-latent-only.wav", dtype="float32", always_2d=True)
    assert latent.shape == audio.shape and np.isfinite(latent).all()
    assert np.abs(latent - audio).max() > 1e-3  # the present audio changed the decoder's output
    metrics = re.findall(r"(encoder|decoder) http://127\.0\.0\.1:(\d+)/metrics", run.stdout)
    assert [m[0] for m in metrics] == ["encoder", "decoder"]
    served = re.findall(r'audio_in_seconds_total\{model="[^"]+"\} ([0-9.]+)', run.stdout)
    assert len(served) == 2 and float(served[0]) == pytest.approx(4.0, abs=0.05)
    for _, port in metrics:  # the services were shut down with the demo
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", int(port))) != 0
