"""`mcrave synth OUT_DIR --layout stereo|mics4|mics8|N --minutes M --seed S`: synthetic corpus."""

from __future__ import annotations

import argparse
import sys
import time


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog=f"mcrave {argv[0]}", description=__doc__)
    parser.add_argument("out_dir", help="folder for the WAV files and scenes.json")
    parser.add_argument(
        "--layout", default="stereo", help="stereo, mics4, mics8 or a channel count"
    )
    parser.add_argument("--minutes", type=float, default=1.0, help="total duration (default 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sr", type=int, default=44100, help="sample rate (default 44100)")
    parser.add_argument(
        "--file-seconds", type=float, default=20.0, help="length of each file (default 20)"
    )
    parser.add_argument(
        "--music",
        nargs="+",
        metavar="PATH",
        default=(),
        help="real recordings (files or folders) the sources play instead of synthetic material",
    )
    parser.add_argument("-q", "--quiet", action="store_true")
    args = parser.parse_args(argv[1:])

    from mcrave.data.synth.corpus import music_catalogue, synth_corpus
    from mcrave.data.synth.scenes import layout_channels

    try:
        layout_channels(args.layout)
        if args.minutes <= 0 or args.file_seconds <= 0 or args.sr < 8000:
            raise ValueError("--minutes and --file-seconds must be positive and --sr >= 8000")
        music = music_catalogue(args.music) if args.music else []
    except ValueError as e:
        print(f"mcrave {argv[0]}: error: {e}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    doc = synth_corpus(
        args.out_dir,
        args.layout,
        args.minutes,
        args.seed,
        args.sr,
        args.file_seconds,
        progress=not args.quiet,
        music=music,
    )
    wall = time.perf_counter() - start
    seconds = sum(f["duration_s"] for f in doc["files"])
    print(
        f"wrote {len(doc['files'])} files ({seconds:.0f} s, {doc['channels']} ch) to {args.out_dir} "
        f"in {wall:.1f} s ({seconds / wall:.0f}x realtime)"
    )
    return 0
