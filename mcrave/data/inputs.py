"""Turn `mcrave prepare` inputs into sources: one N-channel file, or N mono files in channel order.

Accepted inputs:
- a multichannel audio file (any format libsndfile reads) with exactly N channels;
- a folder, scanned recursively for audio files;
- mono files grouped by a channel suffix after the last `_`, `-` or `.` of the name:
  `take_L.wav` + `take_R.wav` (labels L R C LFE Ls Rs Lb Rb M S W X Y Z, case-insensitive,
  `left`/`right` too) or `take_0.wav` ... `take_{N-1}.wav` (numbers, in numeric order);
- a CSV manifest with a header row: an optional `name` column, and N further columns naming each
  channel's mono file in order (paths relative to the CSV file).
Everything is validated before anything is written, so a bad input never costs prepared work.
"""

from __future__ import annotations

import csv
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf

from mcrave.audio import audio_files

LABELS = ["l", "r", "c", "lfe", "ls", "rs", "lb", "rb", "m", "s", "w", "x", "y", "z"]
_ALIASES = {"left": "l", "right": "r", "mid": "m", "side": "s"}
_GROUP_RE = re.compile(r"^(?P<prefix>.+)[_\-.](?P<suffix>[A-Za-z]+|\d+)$")


class InputError(ValueError):
    """A bad input; the message names the file and the problem."""


@dataclass(frozen=True)
class Source:
    name: str  # a file path, or a group pattern like /x/take_{L,R}.wav
    paths: tuple[Path, ...]  # one N-channel file, or N mono files in channel order
    sample_rate: int
    frames: int


def _info(path: Path) -> sf._SoundFileInfo:
    try:
        return sf.info(str(path))
    except Exception as e:  # libsndfile raises RuntimeError/LibsndfileError/TypeError variously
        raise InputError(f"{path}: not a readable audio file ({e})") from None


def _suffix_key(suffix: str) -> tuple[int, int]:
    """Sort key of a channel suffix: numbers numerically, labels in speaker order."""
    if suffix.isdigit():
        return (0, int(suffix))
    label = _ALIASES.get(suffix.lower(), suffix.lower())
    return (1, LABELS.index(label)) if label in LABELS else (2, 0)


def _group(pattern: str, paths: list[Path], channels: int) -> Source:
    infos = [_info(p) for p in paths]
    for p, info in zip(paths, infos, strict=True):
        if info.channels != 1:
            raise InputError(f"{p}: has {info.channels} channels; a channel file must be mono")
    if len(paths) != channels:
        raise InputError(f"{pattern}: channel group has {len(paths)} file(s), expected {channels}")
    rates = {i.samplerate for i in infos}
    lengths = {i.frames for i in infos}
    if len(rates) > 1 or len(lengths) > 1:
        raise InputError(
            f"{pattern}: channel files differ in sample rate or length "
            f"(rates {sorted(rates)}, frames {sorted(lengths)})"
        )
    return Source(pattern, tuple(paths), infos[0].samplerate, infos[0].frames)


def _from_csv(path: Path, channels: int) -> list[Source]:
    try:
        rows = list(csv.DictReader(path.read_text().splitlines()))
    except (OSError, csv.Error, UnicodeDecodeError) as e:
        raise InputError(f"{path}: unreadable CSV manifest ({e})") from None
    if not rows:
        raise InputError(f"{path}: CSV manifest has no rows")
    columns = [c for c in rows[0] if c and c.strip().lower() not in ("name", "id")]
    if len(columns) != channels:
        raise InputError(
            f"{path}: CSV manifest has {len(columns)} channel columns "
            f"({', '.join(columns)}), expected {channels}"
        )
    sources = []
    for i, row in enumerate(rows, start=2):
        if any(not (row.get(c) or "").strip() for c in columns):
            raise InputError(f"{path}: line {i}: empty channel file name")
        paths = [(path.parent / row[c].strip()).resolve() for c in columns]
        for p in paths:
            if not p.is_file():
                raise InputError(f"{path}: line {i}: no such file {p}")
        name = row.get("name") or row.get("id") or f"{path}:{i}"
        sources.append(_group(f"{path}:{name}", paths, channels))
    return sources


def discover(
    inputs: list[str], channels: int, rejected: list[tuple[str, str]] | None = None
) -> list[Source]:
    """Validate all inputs (channel counts, groups, rates) and return them as sources, in order.

    A bad audio file or channel group raises InputError, or with a `rejected` list is appended to
    it as (name, reason) and left out: one unreadable or mono file need not stop a whole folder.
    A missing path or a bad CSV manifest always raises.
    """

    def reject(error: InputError, name: str) -> None:
        if rejected is None:
            raise error
        rejected.append((name, str(error)))

    files: list[Path] = []
    sources: list[Source] = []
    for raw in inputs:
        p = Path(raw).resolve()
        if p.is_dir():
            files += audio_files(p)
        elif p.is_file() and p.suffix.lower() == ".csv":
            sources += _from_csv(p, channels)
        elif p.is_file():
            files.append(p)
        else:
            raise InputError(f"{raw}: no such file or folder")
    groups: dict[tuple[Path, str, str], list[Path]] = defaultdict(list)
    seen: set[Path] = set()
    for p in files:
        if p in seen:
            continue
        seen.add(p)
        try:
            info = _info(p)
        except InputError as error:
            reject(error, str(p))
            continue
        if info.channels == channels:
            sources.append(Source(str(p), (p,), info.samplerate, info.frames))
            continue
        match = _GROUP_RE.match(p.stem)
        if info.channels != 1 or not match or _suffix_key(match["suffix"])[0] == 2:
            hint = (
                (
                    " (name mono channel files NAME_L.wav/NAME_R.wav or NAME_0.wav..., "
                    "or list them in a CSV manifest)"
                )
                if info.channels == 1
                else ""
            )
            reject(
                InputError(f"{p}: has {info.channels} channel(s), expected {channels}{hint}"),
                str(p),
            )
            continue
        groups[(p.parent, match["prefix"], p.suffix)].append(p)
    for (parent, prefix, ext), members in groups.items():
        members.sort(key=lambda q: _suffix_key(_GROUP_RE.match(q.stem)["suffix"]))
        kinds = {_suffix_key(_GROUP_RE.match(q.stem)["suffix"])[0] for q in members}
        suffixes = [_GROUP_RE.match(q.stem)["suffix"] for q in members]
        pattern = f"{parent}/{prefix}_{{{','.join(suffixes)}}}{ext}"
        try:
            if len(kinds) > 1 or len({_suffix_key(s) for s in suffixes}) != len(suffixes):
                raise InputError(f"{pattern}: ambiguous channel suffixes {suffixes}")
            sources.append(_group(pattern, members, channels))
        except InputError as error:
            reject(error, pattern)
    return sources
