"""Real stereo music for training and held-out evaluation, from Debian's free game soundtracks.

    python scripts/music_data.py data/music      # after `apt-get install wesnoth-1.16-music`

Writes DIR/train/ (links to whole tracks), DIR/heldout/ (20 s WAV excerpts of other, whole
tracks: no held-out track is ever trained on) and DIR/heldout_tracks/ (links to those tracks,
the sources of held-out simulated-array rooms). The split is fixed by name, so every run and
every model is judged on the same files.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import soundfile as sf

SOURCES = (Path("/usr/share/games/wesnoth/1.16/data/core/music"),)
HELDOUT = ("knolls", "wanderer", "battle", "elvish-theme", "the_city_falls", "traveling_minstrels")
MIN_SECONDS = 30.0  # jingles (victory, defeat, silence) teach nothing
EXCERPT_S = 20.0
EXCERPT_STARTS_S = (45.0, 120.0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    tracks = sorted(p for d in SOURCES if d.is_dir() for p in d.glob("*.ogg"))
    if not tracks:
        print("no soundtrack found: apt-get install wesnoth-1.16-music", file=sys.stderr)
        return 1
    train, heldout = args.out / "train", args.out / "heldout"
    heldout_tracks = args.out / "heldout_tracks"
    for folder in (train, heldout, heldout_tracks):
        folder.mkdir(parents=True, exist_ok=True)
    for track in tracks:
        info = sf.info(track)
        if info.channels != 2 or info.duration < MIN_SECONDS:
            continue
        link = (train if track.stem not in HELDOUT else heldout_tracks) / track.name
        if not link.exists():
            link.symlink_to(track)
        if track.stem not in HELDOUT:
            continue
        for start in EXCERPT_STARTS_S:
            frames = int(EXCERPT_S * info.samplerate)
            audio, rate = sf.read(track, start=int(start * info.samplerate), frames=frames)
            sf.write(heldout / f"{track.stem}-{int(start)}s.wav", audio, rate, subtype="FLOAT")
    print(
        f"{len(list(train.iterdir()))} training tracks, {len(list(heldout.iterdir()))} held-out excerpts"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
