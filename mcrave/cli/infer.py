"""`mcrave infer MODEL IN OUT`: infer all channels of a file from the present ones."""

from __future__ import annotations

import argparse

import numpy as np

from mcrave.cli.errors import CLIError, run_command


def parse_index_list(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise CLIError(
            f"--present {text!r}: expected comma-separated channel indices like 0,2"
        ) from exc


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="mcrave infer", description=__doc__)
    p.add_argument("model", help="checkpoint file or registry entry (models/NAME[/VERSION])")
    p.add_argument("input", help="audio file with N channels, or one channel per present index")
    p.add_argument("output", help="output audio file (all N channels)")
    p.add_argument(
        "--present", default=None, help="channel indices fed to the encoder (default all)"
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
    args = p.parse_args(argv[1:])

    def body() -> int:
        from mcrave.audio import read_audio, write_audio
        from mcrave.checkpoint import load_model
        from mcrave.inference import infer_array, parse_present
        from mcrave.streaming import StreamingEngine

        model, _ = load_model(args.model)
        present = parse_present(
            parse_index_list(args.present) if args.present is not None else None, model.channels
        )
        audio, _ = read_audio(args.input, model.sample_rate)
        if audio.shape[0] not in (model.channels, len(present)):
            raise CLIError(
                f"{args.input}: has {audio.shape[0]} channels; the model needs {model.channels} "
                f"(all) or {len(present)} (one per --present index)"
            )
        if not np.isfinite(audio).all():
            raise CLIError(f"{args.input}: contains NaN or infinite samples")
        engine = StreamingEngine(model, args.device)
        if args.chunk is not None:
            try:
                engine.check_chunk(args.chunk)
            except ValueError as exc:
                raise CLIError(f"--chunk: {exc}") from exc
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
        write_audio(args.output, out, model.sample_rate)
        print(
            f"wrote {args.output}: {model.channels} channels, {audio.shape[1]} samples, present {present}"
        )
        return 0

    return run_command("infer", body)
