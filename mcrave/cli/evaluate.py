"""`mcrave eval MODEL DATA... -o REPORT_DIR`: missing-channel inference against baselines."""

from __future__ import annotations

import argparse
from pathlib import Path

from mcrave.cli.console import CLIError, run_command, say
from mcrave.cli.options import (
    add_old_spelling,
    add_runtime_option,
    add_threads_option,
    apply_threads,
    require_option,
)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mcrave eval",
        description="Score a model's inferred missing channels against silence, copy, "
        "copy_decoded, Wiener, Wiener-PM and oracle baselines on held-out audio.",
    )
    p.add_argument("model", help="checkpoint file or registry entry (models/NAME[/VERSION])")
    p.add_argument(
        "data",
        nargs="+",
        help="multichannel audio files or prepared dataset folders (their 'valid' split)",
    )
    p.add_argument("-o", "--output", type=Path, help="report folder (required)")
    add_old_spelling(p, "--out", "output", type=Path)
    p.add_argument(
        "--present",
        action="append",
        default=None,
        help="'auto' (default: each single channel, each leave-one-out, all) or a "
        "comma-separated set of channel indices/names; repeat for several sets",
    )
    p.add_argument(
        "--passthrough",
        action="store_true",
        help="also score present channels copied through (model_pt) and the forum's "
        "case: latents of all channels, present ones copied (coded_pt)",
    )
    p.add_argument(
        "--chunk",
        type=int,
        default=None,
        help="stream in chunks of this many samples (default: one offline pass)",
    )
    p.add_argument("--max-seconds", type=float, default=None, help="use at most S s of each file")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available)")
    add_runtime_option(p)
    add_threads_option(p)
    return p


def main(argv: list[str]) -> int:
    parser = _parser()
    args = parser.parse_args(argv[1:])
    require_option(parser, args, "output")
    return run_command("eval", lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    from mcrave.checkpoint import load_model
    from mcrave.evaluation.pipeline import run_evaluation
    from mcrave.evaluation.present_sets import parse_present_sets
    from mcrave.evaluation.sources import load_inputs
    from mcrave.streaming import StreamingEngine

    apply_threads(args.threads)
    if args.max_seconds is not None and args.max_seconds <= 0:
        raise CLIError(f"--max-seconds must be positive, got {args.max_seconds}")
    if args.output.exists() and not args.output.is_dir():
        raise CLIError(f"{args.output}: exists and is not a folder")
    try:
        model, _ = load_model(args.model)
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        text = " ".join(str(err).split())  # torch's messages span lines; ours stay on one
        message = text if args.model in text else f"{args.model}: cannot load model ({text})"
        raise CLIError(message) from err
    present_sets: list[tuple[int, ...]] = []
    for spec in args.present or ["auto"]:
        sets = parse_present_sets(spec, model.channels, tuple(model.cfg.names))
        present_sets += [s for s in sets if s not in present_sets]
    files = load_inputs(args.data, model.channels, model.sample_rate, args.max_seconds)
    engine = StreamingEngine(model, args.device, runtime=args.runtime)
    if args.chunk is not None:
        engine.check_chunk(args.chunk)  # ValueError naming the chunk -> one line, exit 2
    say("eval", f"{len(files)} files, {len(present_sets)} present sets, model {args.model}")
    report = run_evaluation(
        engine,
        args.model,
        files,
        present_sets,
        args.output,
        args.passthrough,
        args.chunk,
        progress=lambda done, f: say("eval", f"[{done}/{len(files)}] scored {f.name}"),
    )
    say("eval", f"done: wrote {args.output / 'report.md'} ({len(report['rows'])} scored cases)")
    return 0
