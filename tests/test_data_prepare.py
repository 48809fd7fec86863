"""`mcrave prepare`: inputs, resampling, silence, rejection of bad files, idempotency, kill-safety."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from data_helpers import noise_audio, write_wav

from mcrave.cli.prepare import main as prepare_main

SR = 44100


def _prepare(*args: str) -> int:
    return prepare_main(["prepare", *map(str, args), "-q"])


def _manifest(root) -> dict:
    return json.loads((root / "manifest.json").read_text())


def _shard(root, entry) -> np.ndarray:
    return np.load(root / entry["shard"], mmap_mode="r")


def _snapshot(root) -> dict[str, bytes]:
    """Every file of a dataset folder (manifest and shards) by relative path."""
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_multichannel_files_and_folder(tmp_path):
    audio = [noise_audio(1.0 + i, 2, seed=i) for i in range(3)]
    for i, a in enumerate(audio):
        write_wav(tmp_path / "in" / f"song{i}.wav", a)
    assert _prepare(tmp_path / "in", "-o", tmp_path / "ds", "--channels", 2) == 0
    doc = _manifest(tmp_path / "ds")
    assert doc["format"] == "mcrave-dataset" and doc["version"] == 1
    assert (doc["channels"], doc["sample_rate"], doc["channel_names"]) == (2, SR, ["L", "R"])
    assert len(doc["files"]) == 3 and {f["split"] for f in doc["files"]} == {"train", "valid"}
    for entry, a in zip(sorted(doc["files"], key=lambda f: f["source"]), audio, strict=True):
        shard = _shard(tmp_path / "ds", entry)
        assert shard.dtype == np.float32 and shard.shape == a.shape == (entry["frames"], 2)
        np.testing.assert_array_equal(shard, a)  # float WAV at the dataset rate: bit-exact
        assert entry["duration_s"] == pytest.approx(len(a) / SR, abs=1e-3)
        assert len(entry["sha256"]) == 64 and entry["shard"] == f"shards/{entry['sha256'][:16]}.npy"
    totals = doc["totals"]
    assert totals["train"]["files"] + totals["valid"]["files"] == 3
    assert totals["train"]["duration_s"] + totals["valid"]["duration_s"] == pytest.approx(6.0)


def test_mono_groups_by_suffix_and_csv(tmp_path):
    left, right = noise_audio(1.0, 1, seed=1), noise_audio(1.0, 1, seed=2)
    write_wav(tmp_path / "in" / "take_R.wav", right)  # written first: order must come from the name
    write_wav(tmp_path / "in" / "take_L.wav", left)
    quad = [noise_audio(0.5, 1, seed=10 + k) for k in range(4)]
    for k in (3, 1, 0, 2):
        write_wav(tmp_path / "quad" / f"room_{k}.wav", quad[k])
    assert _prepare(tmp_path / "in", "-o", tmp_path / "st", "--channels", 2) == 0
    (entry,) = _manifest(tmp_path / "st")["files"]
    assert entry["source"].endswith("take_{L,R}.wav")
    np.testing.assert_array_equal(_shard(tmp_path / "st", entry), np.hstack([left, right]))

    assert _prepare(tmp_path / "quad", "-o", tmp_path / "q", "--channels", 4) == 0
    (entry,) = _manifest(tmp_path / "q")["files"]
    np.testing.assert_array_equal(_shard(tmp_path / "q", entry), np.hstack(quad))

    csv = tmp_path / "list.csv"
    csv.write_text("name,left,right\nswapped,in/take_R.wav,in/take_L.wav\n")
    assert _prepare(csv, "-o", tmp_path / "csv", "--channels", 2) == 0
    (entry,) = _manifest(tmp_path / "csv")["files"]
    np.testing.assert_array_equal(_shard(tmp_path / "csv", entry), np.hstack([right, left]))


def test_resamples_48k_and_drops_silence(tmp_path):
    t = np.arange(2 * 48000) / 48000
    tone = (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    silence = np.zeros(2 * 48000, np.float32)
    mono = np.concatenate([tone, silence, tone, silence[:4800]])  # 2 s, 2 s gap, 2 s, 0.1 s gap
    write_wav(tmp_path / "a.wav", np.stack([mono, 0.5 * mono], 1), sr=48000, subtype="PCM_24")
    assert _prepare(tmp_path / "a.wav", "-o", tmp_path / "ds", "--channels", 2) == 0
    (entry,) = _manifest(tmp_path / "ds")["files"]
    assert entry["source_sample_rate"] == 48000 and entry["source_frames"] == len(mono)
    shard = np.asarray(_shard(tmp_path / "ds", entry))
    # the 2 s gap goes (to within a 1024-frame block of the edges), the short one stays
    assert abs(entry["frames"] - 4.1 * SR) <= 2 * 1024
    assert entry["dropped_frames"] == pytest.approx(2 * 48000 * SR / 48000, abs=2 * 1024)
    spectrum = np.abs(np.fft.rfft(shard[:SR, 0]))
    assert np.fft.rfftfreq(SR, 1 / SR)[np.argmax(spectrum)] == pytest.approx(1000, abs=1)
    np.testing.assert_allclose(shard[:, 1], 0.5 * shard[:, 0], atol=1e-6)


def test_wrong_channel_count_is_rejected_and_nothing_prepared_is_lost(tmp_path):
    """--strict: one bad file aborts the run before anything is written."""
    write_wav(tmp_path / "good" / "a.wav", noise_audio(1.0, 2))
    ds = tmp_path / "ds"
    assert _prepare(tmp_path / "good", "-o", ds, "--channels", 2) == 0
    before = _snapshot(ds)
    bad = write_wav(tmp_path / "bad_three.wav", noise_audio(0.5, 3))
    cmd = [
        sys.executable,
        "-m",
        "mcrave.cli.main",
        "prepare",
        str(tmp_path / "good"),
        str(bad),
        "-o",
        str(ds),
        "--channels",
        "2",
        "--strict",
    ]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and str(bad) in lines[0] and "3 channel" in lines[0], run.stderr
    assert _snapshot(ds) == before

    lone = write_wav(tmp_path / "lone.wav", noise_audio(0.5, 1))  # mono, not part of a group
    assert _prepare(lone, "-o", ds, "--channels", 2) == 2
    write_wav(tmp_path / "grp" / "x_L.wav", noise_audio(0.5, 1))  # a group missing its R file
    assert _prepare(tmp_path / "grp", "-o", ds, "--channels", 2) == 2
    assert _prepare(tmp_path / "good", "-o", ds, "--channels", 2, "--sr", 48000) == 2
    (tmp_path / "junk.wav").write_bytes(b"not audio at all")
    assert _prepare(tmp_path / "junk.wav", "-o", ds, "--channels", 2) == 2
    assert _snapshot(ds) == before


def test_bad_files_in_a_folder_are_skipped_and_listed(tmp_path, capsys):
    """By default an unreadable or mono file costs only itself; the summary names every one,
    and a fixed file is picked up by the next run (nothing about it is recorded)."""
    write_wav(tmp_path / "in" / "a.wav", noise_audio(1.0, 2))
    mono = write_wav(tmp_path / "in" / "mono.wav", noise_audio(0.5, 1))
    junk = tmp_path / "in" / "junk.wav"
    junk.write_bytes(b"not audio at all")
    ds = tmp_path / "ds"
    assert prepare_main(["prepare", str(tmp_path / "in"), "-o", str(ds), "--channels", "2"]) == 0
    out, err = capsys.readouterr()
    assert "2 bad file(s) skipped" in out.splitlines()[-1]
    skipped = err.strip().splitlines()
    assert len(skipped) == 2 and all(
        line.startswith("mcrave prepare: skipped ") for line in skipped
    )
    assert any(str(mono) in line and "1 channel" in line for line in skipped)
    assert any(str(junk) in line and "not a readable audio file" in line for line in skipped)
    assert [f["source"] for f in _manifest(ds)["files"]] == [str(tmp_path / "in" / "a.wav")]
    write_wav(junk, noise_audio(1.0, 2, seed=5))  # fixed
    assert _prepare(tmp_path / "in", "-o", ds, "--channels", 2) == 0
    assert len(_manifest(ds)["files"]) == 2


def test_idempotent_rerun_and_stable_split(tmp_path, capsys):
    for i in range(4):
        write_wav(tmp_path / "in" / f"f{i}.wav", noise_audio(0.5, 2, seed=i))
    ds = tmp_path / "ds"
    assert _prepare(tmp_path / "in", "-o", ds, "--channels", 2) == 0
    before = _snapshot(ds)
    mtimes = {p: p.stat().st_mtime_ns for p in ds.rglob("*.npy")}
    assert prepare_main(["prepare", str(tmp_path / "in"), "-o", str(ds), "--channels", "2"]) == 0
    assert capsys.readouterr().out.count("already prepared, skipped") == 4
    assert _snapshot(ds) == before
    assert {p: p.stat().st_mtime_ns for p in ds.rglob("*.npy")} == mtimes
    splits = {f["sha256"]: f["split"] for f in _manifest(ds)["files"]}
    write_wav(tmp_path / "more" / "g.wav", noise_audio(0.5, 2, seed=9))
    assert _prepare(tmp_path / "in", tmp_path / "more", "-o", ds, "--channels", 2) == 0
    after = {f["sha256"]: f["split"] for f in _manifest(ds)["files"]}
    assert len(after) == 5 and all(after[k] == v for k, v in splits.items())


def test_resumes_after_kill_mid_run(tmp_path):
    """SIGKILL a real prepare run between files; the dataset stays valid and a re-run completes it."""
    for i in range(16):
        write_wav(
            tmp_path / "in" / f"f{i:02d}.wav",
            noise_audio(6.0, 2, sr=48000, seed=i),
            sr=48000,
            subtype="PCM_16",
        )
    ds, clean = tmp_path / "ds", tmp_path / "clean"
    cmd = [
        sys.executable,
        "-m",
        "mcrave.cli.main",
        "prepare",
        str(tmp_path / "in"),
        "-o",
        str(ds),
        "--channels",
        "2",
        "-q",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not (ds / "manifest.json").exists() and time.monotonic() < deadline:
            time.sleep(0.001)
        os.kill(proc.pid, signal.SIGSTOP)  # freeze it to inspect a consistent moment
        done = _manifest(ds)["files"]
        for entry in done:
            assert _shard(ds, entry).shape == (entry["frames"], 2)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert 1 <= len(done) < 16, "the kill should land mid-run"
    # also leave the debris a kill during a write would: half-written temp shard and manifest
    (ds / "shards" / ".deadbeef.npy.tmp-99999").write_bytes(b"\x93NUMPY partial")
    (ds / ".manifest.json.tmp-99999").write_text('{"format": "mcrave-data')
    assert _prepare(tmp_path / "in", "-o", ds, "--channels", 2) == 0
    assert _prepare(tmp_path / "in", "-o", clean, "--channels", 2) == 0
    assert _snapshot(ds).keys() - {".lock"} == _snapshot(clean).keys() - {".lock"}
    assert {k: v for k, v in _snapshot(ds).items() if k.startswith("shards")} == {
        k: v for k, v in _snapshot(clean).items() if k.startswith("shards")
    }
    assert _manifest(ds)["files"] == _manifest(clean)["files"]


def test_kill_between_fsync_and_rename_of_a_shard(tmp_path):
    """The team's fault point (mcrave.atomic) kills the writer mid-write; a re-run recovers."""
    for i in range(3):
        write_wav(tmp_path / "in" / f"f{i}.wav", noise_audio(0.5, 2, seed=i))
    ds = tmp_path / "ds"
    cmd = [
        sys.executable,
        "-m",
        "mcrave.cli.main",
        "prepare",
        str(tmp_path / "in"),
        "-o",
        str(ds),
        "--channels",
        "2",
    ]
    run = subprocess.run(
        cmd,
        env={**os.environ, "MCRAVE_FAULT": "kill_before_rename"},
        capture_output=True,
        timeout=60,
    )
    assert run.returncode == -signal.SIGKILL
    assert not (ds / "manifest.json").exists() and not list((ds / "shards").glob("*.npy"))
    assert list((ds / "shards").glob(".*.tmp-*")), (
        "the kill should leave a complete-but-unnamed temp"
    )
    assert _prepare(tmp_path / "in", "-o", ds, "--channels", 2) == 0
    assert len(_manifest(ds)["files"]) == 3 and not list(ds.rglob(".*.tmp-*"))
