"""`mcrave-client`: run files through remote encoder/decoder services, list their models.

Every failure prints one line `mcrave-client: error: ...` and exits 2; nothing prints a traceback.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import soundfile as sf
from tqdm import tqdm

from mcrave_client.client import DecoderClient, EncoderClient, ModelClient
from mcrave_client.connection import Connection
from mcrave_client.errors import ClientError
from mcrave_client.framing import FramingError
from mcrave_client.infer import infer_file
from mcrave_client.pipeline import Pipeline

# the audio files a folder argument stands for (the same suffixes `mcrave infer` reads)
AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".aif", ".aiff", ".w64", ".caf", ".mp3", ".opus"}
PRESENT_HELP = "present channels: 0-based indices or the model's channel names, e.g. 1, R or 0,2"


def add_connection_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tls-ca", type=Path, help="CA certificate (PEM): connect with TLS")
    parser.add_argument("--tls-cert", type=Path, help="client certificate (PEM) for mTLS")
    parser.add_argument("--tls-key", type=Path, help="client private key (PEM) for mTLS")
    parser.add_argument("--token-file", type=Path, help="file holding a bearer token")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mcrave-client", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    infer = sub.add_parser(
        "infer", help="infer all channels of IN (a file or a folder) from its present channels"
    )
    infer.add_argument("input", type=Path, metavar="IN", help="audio file, or a folder of them")
    infer.add_argument(
        "output", type=Path, metavar="OUT", help="output file; a folder when IN is one"
    )
    infer.add_argument("--present", required=True, help=PRESENT_HELP)
    infer.add_argument("--encoder", required=True, metavar="HOST:PORT")
    infer.add_argument("--decoder", required=True, metavar="HOST:PORT")
    infer.add_argument("--model", help="model name (default: the servers' only model)")
    infer.add_argument("--version", type=int, default=0, help="model version (0 = latest)")
    infer.add_argument(
        "--chunk", type=int, help="samples per channel per chunk (a multiple of the model ratio)"
    )
    infer.add_argument("--seed", type=int, default=0, help="decoder noise seed")
    infer.add_argument(
        "--latent-only",
        action="store_true",
        help="send the decoder latents alone (no present audio: no spatial stage), "
        "like `mcrave infer --latent-only`",
    )
    infer.add_argument(
        "--relay",
        nargs="?",
        const=True,
        default=False,
        metavar="DECODER",
        help="the encoder forwards the latents to the decoder (3 hops per chunk, not 4; the "
        "encoder must list the decoder with --relay-to); DECODER: its address as the encoder "
        "names it, if not --decoder",
    )
    infer.add_argument("--quiet", action="store_true", help="no progress bar")
    add_connection_args(infer)
    sub.add_parser(
        "train", help="submit, watch, cancel, resume, publish or list training jobs", add_help=False
    )
    models = sub.add_parser("models", help="list the models a service serves")
    models.add_argument("--server", required=True, metavar="HOST:PORT")
    add_connection_args(models)
    return parser


def connection(target: str, args: argparse.Namespace) -> Connection:
    return Connection.from_files(target, args.tls_ca, args.tls_cert, args.tls_key, args.token_file)


def _infer(args: argparse.Namespace) -> None:
    pairs = _input_output_pairs(args.input, args.output)
    encoder = EncoderClient(connection(args.encoder, args))
    decoder = DecoderClient(connection(args.decoder, args))
    with Pipeline(encoder, decoder, relay=args.relay) as pipeline:
        info = pipeline.model(args.model, args.version)
        for i, (source, target) in enumerate(pairs, 1):
            frames, rate = _frames_and_rate(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            bar = tqdm(
                total=round(frames / rate, 2),
                unit="s",
                unit_scale=True,
                disable=args.quiet or not sys.stderr.isatty(),
                desc=f"[{i}/{len(pairs)}] {source.name}",
                file=sys.stderr,
            )
            with bar:
                info, present = infer_file(
                    pipeline,
                    source,
                    target,
                    args.present,
                    model=info.ref.name,
                    version=args.version,
                    chunk=args.chunk,
                    seed=args.seed,
                    progress=lambda done, bar=bar, rate=info.sample_rate: bar.update(done / rate),
                    latent_only=args.latent_only,
                )
            mode = "latent-only" if args.latent_only else "spatial"
            mode += ", relayed" if args.relay else ""
            say(
                f"[{i}/{len(pairs)}] wrote {target} ({info.channels} channels at {rate} Hz, "
                f"model {info.ref.name} v{info.ref.version}, present {list(present)}, {mode})"
            )
    if args.input.is_dir():
        say(f"done: {len(pairs)} files from {args.input} into {args.output}")


def _input_output_pairs(source: Path, target: Path) -> list[tuple[Path, Path]]:
    """A file -> [(it, OUT)]; a folder -> each audio file under it, to OUT/<same path>.wav."""
    if not source.is_dir():
        return [(source, target)]
    if target.exists() and not target.is_dir():
        raise ClientError(f"{target}: the input is a folder, so the output must be one too")
    found = sorted(
        p for p in source.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES
    )
    if not found:
        raise ClientError(
            f"{source}: folder has no audio files ({', '.join(sorted(AUDIO_SUFFIXES))})"
        )
    return [(p, target / p.relative_to(source).with_suffix(".wav")) for p in found]


def say(text: str) -> None:
    """A result line: plain on a terminal, timestamped when stdout is a log file."""
    stamp = "" if sys.stdout.isatty() else time.strftime("%Y-%m-%d %H:%M:%S ")
    print(f"{stamp}{text}", flush=True)


def _frames_and_rate(path: Path) -> tuple[int, int]:
    """Length and rate of `path` from its header (the progress bar's scale), without decoding."""
    try:
        info = sf.info(str(path))
        return info.frames, info.samplerate
    except (OSError, RuntimeError, sf.LibsndfileError) as exc:
        raise ClientError(f"{path}: cannot read audio ({' '.join(str(exc).split())})") from None


def _models(args: argparse.Namespace) -> None:
    with ModelClient(connection(args.server, args)) as client:
        for m in client.list_models():
            print(
                f"{m.ref.name}\tv{m.ref.version}\t{m.channels} ch\t{m.sample_rate} Hz\t"
                f"ratio {m.ratio}\tlatent {m.latent_size}\tlatency {m.latency}\t"
                f"{m.ref.fingerprint[:12]}\tchannels {','.join(m.channel_names)}"
            )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["train"]:  # training jobs have their own parser (mcrave_client.trainer)
        from mcrave_client.trainer import main as train_main

        return train_main(argv[1:])
    args = _parser().parse_args(argv)
    try:
        {"infer": _infer, "models": _models}[args.command](args)
    except (ClientError, FramingError) as err:
        print(f"mcrave-client: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mcrave-client: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
