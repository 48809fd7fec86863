"""`mcrave-client`: run files through remote encoder/decoder services, list their models.

Every failure prints one line `mcrave-client: error: ...` and exits 2; nothing prints a traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import soundfile as sf
from tqdm import tqdm

from mcrave_client.client import DecoderClient, EncoderClient, ModelClient
from mcrave_client.connection import Connection, read_token
from mcrave_client.errors import ClientError
from mcrave_client.framing import FramingError
from mcrave_client.infer import infer_file
from mcrave_client.pipeline import Pipeline


def parse_present(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--present takes comma-separated channel indices (0-based), got {text!r}"
        ) from None


def add_connection_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tls-ca", type=Path, help="CA certificate (PEM): connect with TLS")
    parser.add_argument("--tls-cert", type=Path, help="client certificate (PEM) for mTLS")
    parser.add_argument("--tls-key", type=Path, help="client private key (PEM) for mTLS")
    parser.add_argument("--token-file", type=Path, help="file holding a bearer token")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mcrave-client", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    infer = sub.add_parser("infer", help="infer all channels of IN from its present channels")
    infer.add_argument("input", type=Path, metavar="IN")
    infer.add_argument("output", type=Path, metavar="OUT")
    infer.add_argument(
        "--present",
        type=parse_present,
        required=True,
        help="present channel indices, 0-based, comma-separated (e.g. 1 or 0,2)",
    )
    infer.add_argument("--encoder", required=True, metavar="HOST:PORT")
    infer.add_argument("--decoder", required=True, metavar="HOST:PORT")
    infer.add_argument("--model", help="model name (default: the servers' only model)")
    infer.add_argument("--chunk", type=int, help="frames per chunk (multiple of the model ratio)")
    infer.add_argument("--seed", type=int, default=0, help="decoder noise seed")
    infer.add_argument(
        "--latent-only",
        action="store_true",
        help="send the decoder latents alone (no present audio: no spatial stage), "
        "like `mcrave infer --latent-only`",
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
    token = read_token(args.token_file) if args.token_file else None
    return Connection(target, args.tls_ca, args.tls_cert, args.tls_key, token)


def _infer(args: argparse.Namespace) -> None:
    encoder = EncoderClient(connection(args.encoder, args))
    decoder = DecoderClient(connection(args.decoder, args))
    with Pipeline(encoder, decoder) as pipeline:
        frames, rate = _frames_and_rate(args.input)
        bar = tqdm(
            total=round(frames / rate, 2),
            unit="s",
            unit_scale=True,
            disable=args.quiet,
            desc=args.input.name,
            file=sys.stderr,
        )
        with bar:
            info = infer_file(
                pipeline,
                args.input,
                args.output,
                args.present,
                model=args.model,
                chunk=args.chunk,
                seed=args.seed,
                progress=lambda frames: bar.update(frames / rate),
                latent_only=args.latent_only,
            )
    mode = "latent-only" if args.latent_only else "spatial"
    print(
        f"wrote {args.output} ({info.channels} channels, model {info.ref.name} "
        f"v{info.ref.version}, present {list(args.present)}, {mode})"
    )


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
                f"{m.ref.fingerprint[:12]}"
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
