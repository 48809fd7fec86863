"""`mcrave infer MODEL IN OUT`: infer all channels of a file (or each file of a folder, into a
folder) from the present ones."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mcrave.cli.console import CLIError, run_command, say
from mcrave.cli.options import add_runtime_option, add_threads_option, apply_threads

if TYPE_CHECKING:  # torch is imported only when the command runs
    from mcrave.streaming import StreamingEngine


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="mcrave infer", description=__doc__)
    p.add_argument("model", help="checkpoint file or registry entry (models/NAME[/VERSION])")
    p.add_argument(
        "input",
        help="audio file with N channels (or one channel per present index), or a folder of them",
    )
    p.add_argument(
        "output", help="output audio file (all N channels); a folder when the input is one"
    )
    p.add_argument(
        "--present",
        default=None,
        help="channels fed to the model: indices or names, e.g. 1 or R or 0,2 (default all)",
    )
    p.add_argument("--chunk", type=int, default=None, help="stream in chunks of this many samples")
    p.add_argument(
        "--passthrough", action="store_true", help="copy present channels from the input"
    )
    p.add_argument(
        "--latent-only",
        action="store_true",
        help="decode every channel from the latents alone (no spatial stage: the old behaviour)",
    )
    p.add_argument("--device", default=None)
    add_runtime_option(p)
    add_threads_option(p)
    args = p.parse_args(argv[1:])

    def body() -> int:
        from mcrave.audio import audio_files
        from mcrave.checkpoint import load_model
        from mcrave.present import parse_present
        from mcrave.streaming import StreamingEngine

        apply_threads(args.threads)
        model, _ = load_model(args.model)
        present = list(parse_present(args.present, model.channels, model.cfg.names))
        engine = StreamingEngine(model, args.device, runtime=args.runtime)
        if args.chunk is not None:
            try:
                engine.check_chunk(args.chunk)
            except ValueError as exc:
                raise CLIError(f"--chunk: {exc}") from exc
        source = Path(args.input)
        if not source.is_dir():
            _infer_file(engine, source, Path(args.output), present, args)
            return 0
        inputs = audio_files(source)
        for i, path in enumerate(inputs, 1):
            target = Path(args.output) / path.relative_to(source).with_suffix(".wav")
            _infer_file(engine, path, target, present, args, f"[{i}/{len(inputs)}] ")
        say("infer", f"done: {len(inputs)} files from {source} into {args.output}")
        return 0

    return run_command("infer", body)


def _infer_file(
    engine: StreamingEngine,
    source: Path,
    target: Path,
    present: list[int],
    args: argparse.Namespace,
    counter: str = "",
) -> None:
    from mcrave.audio import read_audio, resample, write_audio
    from mcrave.inference import infer_array

    model = engine.model
    audio, rate = read_audio(source)
    audio = resample(audio, rate, model.sample_rate)  # the model's rate in, the input's rate out
    if audio.shape[0] not in (model.channels, len(present)):
        raise CLIError(
            f"{source}: has {audio.shape[0]} channels; the model needs {model.channels} "
            f"(all) or {len(present)} (one per --present index)"
        )
    if not np.isfinite(audio).all():
        raise CLIError(f"{source}: contains NaN or infinite samples")
    long_file = audio.shape[1] > 60 * model.sample_rate
    out = infer_array(
        engine,
        audio,
        present,
        chunk=args.chunk,
        passthrough=args.passthrough,
        progress=long_file,
        latent_only=args.latent_only,
    )
    out = resample(out, model.sample_rate, rate)
    write_audio(target, out, rate)
    say(
        "infer",
        f"{counter}wrote {target}: {model.channels} channels, {out.shape[1]} samples at {rate} Hz, "
        f"present {present}",
    )
