"""`mcrave prepare INPUT... -o DATASET --channels N`: audio files -> memory-mappable training shards."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog=f"mcrave {argv[0]}",
        description=__doc__,
        epilog="INPUT: N-channel files, folders, mono channel groups (NAME_L.wav/NAME_R.wav, "
        "NAME_0.wav...) or a CSV manifest (header: optional name column + one column per channel).",
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT")
    parser.add_argument("-o", "--output", required=True, metavar="DATASET", help="dataset folder")
    parser.add_argument("--channels", type=int, required=True, help="channels per example (N)")
    parser.add_argument("--sr", type=int, default=44100, help="sample rate (default 44100)")
    parser.add_argument("--valid-fraction", type=float, default=None, help="default 0.1")
    parser.add_argument("--seed", type=int, default=None, help="split seed (default 0)")
    parser.add_argument("--channel-names", default="", help="comma-separated (default L,R / c0..)")
    parser.add_argument("--silence-db", type=float, default=-60.0, help="silence threshold (dBFS)")
    parser.add_argument("--min-silence", type=float, default=0.5, help="shortest dropped gap (s)")
    parser.add_argument(
        "--strict",
        action="store_true",
        help="abort on the first bad file (default: skip bad files and list them at the end)",
    )
    parser.add_argument("-q", "--quiet", action="store_true")
    args = parser.parse_args(argv[1:])
    if args.channels < 1 or args.sr < 1000:
        parser.error("--channels must be >= 1 and --sr >= 1000")
    if args.valid_fraction is not None and not 0 <= args.valid_fraction < 1:
        parser.error("--valid-fraction must be in [0, 1)")

    from mcrave.atomic import fault_from_env
    from mcrave.data.prepare import PrepareError, PrepareOptions, prepare

    names = tuple(n.strip() for n in args.channel_names.split(",") if n.strip())
    opts = PrepareOptions(
        args.channels,
        args.sr,
        args.valid_fraction,
        args.seed,
        names,
        args.silence_db,
        min_silence_s=args.min_silence,
    )
    rejected: list[tuple[str, str]] | None = None if args.strict else []
    try:
        doc = prepare(
            args.inputs,
            args.output,
            opts,
            log=(lambda _: None) if args.quiet else print,
            before_rename=fault_from_env(),
            rejected=rejected,
        )
    except PrepareError as e:
        print(f"mcrave {argv[0]}: error: {e}", file=sys.stderr)
        return 2
    t = doc["totals"]
    print(
        f"{args.output}: train {t['train']['files']} files / {t['train']['duration_s']:.1f} s, "
        f"valid {t['valid']['files']} files / {t['valid']['duration_s']:.1f} s"
        + (f"; {len(rejected)} bad file(s) skipped (--strict aborts instead)" if rejected else "")
    )
    for _, reason in rejected or []:  # reasons start with the file's name
        print(f"mcrave {argv[0]}: skipped {reason}", file=sys.stderr)
    return 0
