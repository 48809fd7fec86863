"""Scenes: where sources and microphones are, and how a scene becomes N channels.

A scene is a plain JSON-able dict; `sample_scene` draws one for a layout and `render_scene` renders
any such dict, so the JSON written beside each WAV file is the exact recipe of that file.

Scene kinds and the inter-channel structure they produce:
- ``studio`` (stereo): dry sources panned with a level difference (sin/cos law) *and* a time
  difference on the far channel, plus a shared diffuse reverb send.
- ``spaced_pair`` (stereo): two omnis 0.7-1.2 m apart in a room; each source is placed so its
  direct-path time difference is 1-1.9 ms (the channels correlate at that lag, not at 0).
- ``xy`` / ``blumlein`` (stereo): coincident cardioids / figure-eights at +-45 deg: level
  differences only, lag 0.
- ``ortf`` (stereo): near-coincident cardioids 17 cm apart at +-55 deg.
- ``array`` (mics4, mics8, N): compact arrays (circle, line, square, tetrahedral cardioids) or a
  spaced quad, 1-3 sources in a reverberant room.
Room sources may move (back and forth along a segment); channel 0 is the left/first microphone.
Time differences are reported as ``tdoa_ms[m]`` = arrival at mic m minus arrival at mic 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import signal

from mcrave.data.synth.material import file_material, render_material
from mcrave.data.synth.room import SPEED_OF_SOUND, Mic, Room, early_response, late_tail

LAYOUTS = {"stereo": 2, "mics4": 4, "mics8": 8}
T_MIX = 0.08  # early/late boundary of the room model, seconds
_MOVE_HOP = 0.1  # moving sources: early response recomputed every 100 ms (Hann overlap-add)


def layout_channels(layout: str) -> int:
    """Channel count of a layout name (`stereo`, `mics4`, `mics8`) or a bare integer string."""
    if layout in LAYOUTS:
        return LAYOUTS[layout]
    if layout.isdigit() and int(layout) >= 1:
        return int(layout)
    raise ValueError(f"layout must be one of {sorted(LAYOUTS)} or a channel count, got {layout!r}")


def channel_names(layout: str) -> list[str]:
    n = layout_channels(layout)
    return ["L", "R"] if n == 2 else [f"m{i}" for i in range(n)]


def _r(x: Any) -> Any:
    """Round floats for a compact, stable JSON description."""
    if isinstance(x, np.ndarray | list | tuple):
        return [_r(v) for v in x]
    return round(float(x), 4)


def _axis(azimuth_deg: float, elevation_deg: float = 0.0) -> list[float]:
    """Unit vector; azimuth 0 = straight ahead (+y), positive to the right (+x), z up."""
    a, e = np.radians(azimuth_deg), np.radians(elevation_deg)
    return [float(np.sin(a) * np.cos(e)), float(np.cos(a) * np.cos(e)), float(np.sin(e))]


def _mic(pos: Any, pattern: str = "omni", axis: Any = (0.0, 1.0, 0.0)) -> dict[str, Any]:
    return {"pos": _r(pos), "pattern": pattern, "axis": _r(axis)}


def _materials(rng: np.random.Generator, count: int, music: bool) -> list[str]:
    pool = (
        ["pluck", "fm", "additive", "bass", "drums"]
        if music
        else ["speech", "speech", "pluck", "fm", "additive", "bass", "drums", "noise"]
    )
    return [str(m) for m in rng.choice(pool, size=count, replace=count > len(pool))]


def _room(
    rng: np.random.Generator,
    lo: tuple[float, float, float],
    hi: tuple[float, float, float],
    rt60: tuple[float, float],
) -> dict[str, Any]:
    return {"dims": _r(rng.uniform(lo, hi)), "rt60": _r(rng.uniform(*rt60))}


def _front(center: np.ndarray, azimuth: float, dist: float, height: float) -> np.ndarray:
    return center + dist * np.array(_axis(azimuth)) + np.array([0.0, 0.0, height])


def _spaced_pair_source(
    center: np.ndarray, spacing: float, target_ms: float, dist: float, height: float
) -> np.ndarray:
    """Position in front of the pair whose exact direct-path TDOA (R minus L) is `target_ms`."""
    left, right = center - [spacing / 2, 0, 0], center + [spacing / 2, 0, 0]

    def tdoa(az: float) -> float:
        s = _front(center, az, dist, height)
        return (np.linalg.norm(s - right) - np.linalg.norm(s - left)) / SPEED_OF_SOUND * 1e3

    lo, hi = (0.0, -90.0) if target_ms > 0 else (0.0, 90.0)  # sources on the left reach L first
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if abs(tdoa(mid)) < abs(target_ms):
            lo = mid
        else:
            hi = mid
    return _front(center, 0.5 * (lo + hi), dist, height)


def _moving_path(
    rng: np.random.Generator, start: np.ndarray, room: dict[str, Any], avoid: np.ndarray
) -> list[list[float]]:
    """A second point 0.5-3 m away inside the room (>= 0.8 m from the array centre)."""
    dims = np.asarray(room["dims"])
    for _ in range(50):
        end = start + rng.uniform(-1, 1, 3) * [3.0, 3.0, 0.3]
        if np.all(end > 0.5) and np.all(end < dims - 0.5) and np.linalg.norm(end - avoid) > 0.8:
            if np.linalg.norm(end - start) > 0.5:
                return _r([start, end])
    return _r([start, start])


def _room_sources(
    rng: np.random.Generator,
    scene: dict[str, Any],
    positions: list[np.ndarray],
    music: bool,
    p_move: float,
) -> None:
    center = np.mean([m["pos"] for m in scene["mics"]], axis=0)
    scene["sources"] = []
    for pos, material in zip(positions, _materials(rng, len(positions), music), strict=True):
        path = (
            _moving_path(rng, pos, scene["room"], center)
            if rng.random() < p_move
            else _r([pos, pos])
        )
        scene["sources"].append(
            {
                "material": material,
                "level_db": _r(rng.uniform(-6, 0)),
                "path": path,
                "speed_mps": _r(rng.uniform(0.3, 1.2)),
            }
        )


def _stereo_scene(kind: str, rng: np.random.Generator) -> dict[str, Any]:
    count = int(rng.integers(1, 4))
    if kind == "studio":
        itd_max = rng.uniform(0.2, 1.5)
        sources = []
        for material in _materials(rng, count + 1, music=True):
            pan = rng.uniform(-0.9, 0.9)
            sources.append(
                {
                    "material": material,
                    "level_db": _r(rng.uniform(-6, 0)),
                    "pan": _r(pan),
                    "itd_ms": _r(abs(pan) * itd_max),
                }
            )
        return {
            "kind": kind,
            "sources": sources,
            "reverb": {
                "room": _room(rng, (5, 4, 2.5), (25, 20, 10), (0.4, 2.0)),
                "send_db": _r(rng.uniform(-24, -8)),
            },
        }
    room = _room(rng, (8, 6, 3), (20, 20, 9), (0.3, 1.6))
    center = np.array(
        [room["dims"][0] / 2 + rng.uniform(-1, 1), rng.uniform(1.0, 1.5), rng.uniform(1.5, 2.5)]
    )
    if kind == "spaced_pair":
        spacing = rng.uniform(0.7, 1.2)
        mics = [_mic(center - [spacing / 2, 0, 0]), _mic(center + [spacing / 2, 0, 0])]
        positions = []
        for _ in range(count):
            target = rng.uniform(1.0, min(1.9, 0.92 * spacing / SPEED_OF_SOUND * 1e3)) * rng.choice(
                [-1, 1]
            )
            positions.append(
                _spaced_pair_source(
                    center, spacing, target, rng.uniform(1.2, 3.5), rng.uniform(-0.5, 0.3)
                )
            )
        scene = {"kind": kind, "room": room, "mics": mics}
        _room_sources(rng, scene, positions, music=rng.random() < 0.6, p_move=0.0)
        return scene
    pattern, half_angle, spacing = {
        "xy": ("cardioid", 45, 0.0),
        "blumlein": ("figure8", 45, 0.0),
        "ortf": ("cardioid", 55, 0.17),
    }[kind]
    mics = [
        _mic(center - [spacing / 2, 0, 0], pattern, _axis(-half_angle)),
        _mic(center + [spacing / 2, 0, 0], pattern, _axis(half_angle)),
    ]
    positions = [
        _front(center, rng.uniform(-70, 70), rng.uniform(1.5, 4.0), rng.uniform(-0.5, 0.3))
        for _ in range(count)
    ]
    scene = {"kind": kind, "room": room, "mics": mics}
    _room_sources(rng, scene, positions, music=rng.random() < 0.6, p_move=0.25)
    return scene


def _array_mics(rng: np.random.Generator, n: int, center: np.ndarray) -> tuple[str, list[dict]]:
    shapes = ["circle", "line"] + (["square", "tetra", "spaced_quad"] if n == 4 else [])
    shape = str(rng.choice(shapes)) if n > 1 else "single"
    if shape == "single":
        return shape, [_mic(center)]
    if shape == "circle":
        radius = rng.uniform(0.04, 0.15)
        angles = np.linspace(0, 2 * np.pi, n, endpoint=False) + rng.uniform(0, np.pi)
        return shape, [_mic(center + radius * np.array([np.cos(a), np.sin(a), 0])) for a in angles]
    if shape == "line":
        step = rng.uniform(0.03, 0.12)
        return shape, [_mic(center + [(i - (n - 1) / 2) * step, 0, 0]) for i in range(n)]
    if shape == "square":
        half = rng.uniform(0.03, 0.1)
        return shape, [
            _mic(center + [sx * half, sy * half, 0])
            for sx, sy in ((-1, 1), (1, 1), (-1, -1), (1, -1))
        ]
    if shape == "tetra":  # A-format-like: cardioids pointing outward from a 2 cm tetrahedron
        dirs = np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]]) / np.sqrt(3)
        return shape, [_mic(center + 0.02 * d, "cardioid", d) for d in dirs]
    half = rng.uniform(0.5, 1.0)  # spaced quad: front pair and rear pair
    return shape, [
        _mic(center + [sx * half, sy * half, 0]) for sx, sy in ((-1, 1), (1, 1), (-1, -1), (1, -1))
    ]


def _array_scene(n: int, rng: np.random.Generator) -> dict[str, Any]:
    room = _room(rng, (4, 4, 2.5), (15, 12, 6), (0.2, 1.2))
    dims = np.asarray(room["dims"])
    center = np.array(
        [rng.uniform(1.5, dims[0] - 1.5), rng.uniform(1.5, dims[1] - 1.5), rng.uniform(1.2, 1.8)]
    )
    shape, mics = _array_mics(rng, n, center)
    positions = []
    while len(positions) < int(rng.integers(1, 4)):
        p = rng.uniform([0.5, 0.5, 1.0], dims - [0.5, 0.5, max(0.5, dims[2] - 2.2)])
        if 1.0 <= np.linalg.norm(p - center) <= 6.0:
            positions.append(p)
    scene = {"kind": "array", "shape": shape, "room": room, "mics": mics}
    _room_sources(rng, scene, positions, music=rng.random() < 0.4, p_move=0.35)
    return scene


STEREO_KINDS = {"studio": 0.3, "spaced_pair": 0.25, "xy": 0.15, "blumlein": 0.1, "ortf": 0.2}


def _music_sources(
    scene: dict[str, Any], music: Sequence[tuple[str, float]], rng: np.random.Generator
) -> None:
    """Give every source a random excerpt of a real recording ((path, seconds) pairs)."""
    for src in scene["sources"]:
        path, seconds = music[int(rng.integers(len(music)))]
        offset = rng.uniform(0.0, max(0.0, seconds - scene["duration_s"]))
        src["material"] = file_material(path, float(_r(offset)), int(rng.integers(2)))


def sample_scene(
    layout: str,
    duration_s: float,
    rng: np.random.Generator,
    kind: str | None = None,
    music: Sequence[tuple[str, float]] = (),
) -> dict[str, Any]:
    """Draw a random scene for `layout` (stereo: of `kind`, else a random one of STEREO_KINDS).
    With `music` ((path, seconds) of recordings), the sources play excerpts of real music
    (one channel of a random track each) instead of synthetic material.

    The result is JSON-able and fully describes the render.
    """
    n = layout_channels(layout)
    if n == 2:
        if kind is None:
            kind = str(rng.choice(list(STEREO_KINDS), p=list(STEREO_KINDS.values())))
        elif kind not in STEREO_KINDS:
            raise ValueError(f"stereo scene kind must be one of {list(STEREO_KINDS)}, got {kind!r}")
        scene = _stereo_scene(kind, rng)
    else:
        scene = _array_scene(n, rng)
    scene.update(
        {
            "channels": n,
            "duration_s": _r(duration_s),
            "peak_dbfs": _r(rng.uniform(-6, -1)),
            "noise_dbfs": _r(rng.uniform(-85, -70)),
        }
    )
    if music:
        _music_sources(scene, music, rng)
    _annotate_direct(scene)
    return scene


def _mic_of(desc: dict[str, Any]) -> Mic:
    return Mic(tuple(desc["pos"]), desc["pattern"], tuple(desc["axis"]))


def _annotate_direct(scene: dict[str, Any]) -> None:
    """Add each source's direct-path tdoa_ms / ild_db per channel (relative to channel 0)."""
    for src in scene["sources"]:
        if "pan" in src:
            gl, gr = np.cos((src["pan"] + 1) * np.pi / 4), np.sin((src["pan"] + 1) * np.pi / 4)
            src["ild_db"] = _r([0.0, 20 * np.log10(gr / gl)])
            src["tdoa_ms"] = _r([0.0, src["itd_ms"] if src["pan"] < 0 else -src["itd_ms"]])
            continue
        vecs = np.asarray(src["path"][0]) - np.array([m["pos"] for m in scene["mics"]])
        dist = np.linalg.norm(vecs, axis=1)
        polar = np.array(
            [
                _mic_of(m).gain(v[None] / d)[0]
                for m, v, d in zip(scene["mics"], vecs, dist, strict=True)
            ]
        )
        gains = np.maximum(np.abs(polar), 1e-6) / dist
        src["tdoa_ms"] = _r((dist - dist[0]) / SPEED_OF_SOUND * 1e3)
        src["ild_db"] = _r(20 * np.log10(gains / gains[0]))


def _delay(x: np.ndarray, seconds: float, sr: int) -> np.ndarray:
    """Fractional delay by a linear phase (signal zero-padded so nothing wraps around)."""
    shift = seconds * sr
    pad = int(np.ceil(shift)) + 1
    spec = np.fft.rfft(np.pad(x, (0, pad)))
    spec *= np.exp(-2j * np.pi * np.fft.rfftfreq(len(x) + pad) * shift)
    return np.fft.irfft(spec, len(x) + pad)[: len(x)]


def _path_position(src: dict[str, Any], t: np.ndarray) -> np.ndarray:
    """Back-and-forth motion between the two path points at speed_mps. -> (len(t), 3)"""
    a, b = np.asarray(src["path"][0]), np.asarray(src["path"][1])
    length = np.linalg.norm(b - a)
    if length == 0:
        return np.repeat(a[None], len(t), 0)
    phase = (t * src["speed_mps"] / length) % 2.0
    frac = np.where(phase < 1, phase, 2 - phase)
    return a + frac[:, None] * (b - a)


def _render_moving(
    x: np.ndarray, src: dict[str, Any], room: Room, mics: list[Mic], sr: int
) -> np.ndarray:
    """Early response re-evaluated every hop, applied by Hann-windowed overlap-add. -> (M, len(x))"""
    hop = int(_MOVE_HOP * sr)
    window = signal.windows.hann(2 * hop, sym=False)
    n = len(x)
    out = np.zeros((len(mics), n + 2 * hop + int(T_MIX * sr) + 64))
    padded = np.pad(x, (hop, 2 * hop))
    starts = np.arange(0, n + hop, hop)
    positions = _path_position(src, starts / sr)
    for start, pos in zip(starts, positions, strict=True):
        frame = padded[start : start + 2 * hop] * window
        if not frame.any():
            continue
        ir = early_response(room, pos, mics, sr, T_MIX)
        y = signal.fftconvolve(frame[None], ir, axes=1)
        out[:, start : start + y.shape[1]] += y[:, : out.shape[1] - start]
    return out[:, hop : hop + n]


def render_scene(scene: dict[str, Any], sr: int, rng: np.random.Generator) -> np.ndarray:
    """Render a scene dict to float32 (channels, frames) with peak at scene['peak_dbfs']."""
    n = int(round(scene["duration_s"] * sr))
    dry = [
        render_material(s["material"], n / sr, sr, rng) * 10 ** (s["level_db"] / 20)
        for s in scene["sources"]
    ]
    if scene["kind"] == "studio":
        out = np.zeros((2, n))
        for x, src in zip(dry, scene["sources"], strict=True):
            gains = 10 ** (np.array(src["ild_db"]) / 20)
            gains /= np.sqrt((gains**2).sum())
            for c in range(2):
                out[c] += gains[c] * _delay(
                    x, max(src["tdoa_ms"][c] - min(src["tdoa_ms"]), 0) / 1e3, sr
                )
        rev = scene["reverb"]
        mics = [Mic((-0.15, 0, 0)), Mic((0.15, 0, 0))]
        tail = late_tail(Room(tuple(rev["room"]["dims"]), rev["room"]["rt60"]), mics, sr, 0.02, rng)
        wet = signal.fftconvolve(np.sum(dry, 0)[None], tail, axes=1)[:, :n]
        out += (
            wet
            * 10 ** (rev["send_db"] / 20)
            / (np.sqrt(np.mean(wet**2)) + 1e-12)
            * np.sqrt(np.mean(out**2))
        )
    else:
        room = Room(tuple(scene["room"]["dims"]), scene["room"]["rt60"])
        mics = [_mic_of(m) for m in scene["mics"]]
        out = np.zeros((len(mics), n))
        for x, src in zip(dry, scene["sources"], strict=True):
            if src["path"][0] == src["path"][1]:
                ir = early_response(room, np.asarray(src["path"][0]), mics, sr, T_MIX)
                out += signal.fftconvolve(x[None], ir, axes=1)[:, :n]
            else:
                out += _render_moving(x, src, room, mics, sr)
        # one diffuse tail realisation per scene, shared by its sources (position-independent)
        tail = late_tail(room, mics, sr, T_MIX, rng)
        out += signal.fftconvolve(np.sum(dry, 0)[None], tail, axes=1)[:, :n]
    out *= 10 ** (scene["peak_dbfs"] / 20) / (np.abs(out).max() + 1e-12)
    out += 10 ** (scene["noise_dbfs"] / 20) * rng.standard_normal(out.shape)
    return np.clip(out, -0.999, 0.999).astype(np.float32)
