"""`mcrave serve encoder|decoder|trainer ...`: run one gRPC service until SIGTERM.

The services own their command line: the core `mcrave` command knows nothing of them and finds
this module through the `mcrave.commands` entry-point group (pyproject.toml), which gives it
`HELP` and `main`. Only argparse is imported at the top, so `mcrave --help` stays cheap; gRPC and
the servers come in once the arguments are parsed. New services join `SERVICES` (a module
exposing a `services.common.server.ServiceDef` named SERVICE); where models come from is decided
in `models_dir` (the hook for `--pull-from`).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.util
import logging
import sys
from pathlib import Path

HELP = "run the encoder, decoder or trainer gRPC service"

# what serving needs beyond the core: the `serve` extra and the SDK (clients/python)
SERVE_MODULES = ("grpc", "grpc_health", "grpc_reflection", "google.protobuf", "mcrave_client")

# service -> (module exposing SERVICE, default gRPC port, default metrics port)
SERVICES: dict[str, tuple[str, int, int]] = {
    "encoder": ("services.encoder.servicer", 50051, 9451),
    "decoder": ("services.decoder.servicer", 50052, 9452),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mcrave serve", description="run an mcrave gRPC service")
    parser.add_argument(
        "service",
        choices=[*sorted(SERVICES), "trainer"],
        help="which service to run (`mcrave serve trainer --help` lists the trainer's options)",
    )
    parser.add_argument(
        "--models", type=Path, required=True, help="model registry folder (MODELS/<name>/<version>)"
    )
    from services.common.options import add_endpoint_options, add_stream_options

    add_endpoint_options(
        parser, port=None, metrics_port=None, ports_help="default 50051 encoder, 50052 decoder"
    )
    add_stream_options(parser)
    parser.add_argument(
        "--poll-seconds", type=float, default=2.0, help="registry poll interval (default 2)"
    )
    parser.add_argument(
        "--grace-seconds", type=float, default=10.0, help="drain time on SIGTERM (default 10)"
    )
    parser.add_argument(
        "--threads", type=int, help="torch threads for the model (default: torch's choice)"
    )
    from mcrave.cli.options import add_runtime_option

    add_runtime_option(parser, "engine runtime for every model served")
    parser.add_argument(
        "--ready-file", type=Path, help="write the bound ports here as JSON once serving"
    )
    parser.add_argument(
        "--pull-from", metavar="HOST:PORT", help="mirror a trainer's published models into --models"
    )
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="--pull-from a trainer off loopback without TLS (models could be tampered with)",
    )
    r = parser.add_argument_group(
        "relay (encoder only): forward relayed streams' latents straight to a decoder"
    )
    parser.add_argument(
        "--advertise",
        metavar="HOST:PORT",
        default="",
        help="decoder only: the address encoders reach this process at, told to clients of "
        "relayed streams when a load balancer stands in front of several decoders",
    )
    r.add_argument(
        "--relay-to",
        metavar="HOST:PORT",
        action="append",
        default=[],
        help="a decoder this encoder may relay to, or a pattern of them (`*` and `?` in the host, "
        "e.g. '*.mcrave-decoder.NS.svc.cluster.local:50052'); repeat for several",
    )
    r.add_argument("--relay-tls-ca", type=Path, help="CA (PEM) of the decoders' certificates")
    r.add_argument("--relay-tls-cert", type=Path, help="client certificate (PEM) for their mTLS")
    r.add_argument("--relay-tls-key", type=Path, help="private key (PEM) of --relay-tls-cert")
    r.add_argument("--relay-token-file", type=Path, help="bearer token the decoders expect")
    r.add_argument(
        "--relay-tls-server-name",
        help="name to verify the decoders' certificate against (e.g. their Service's name, when "
        "relaying to per-pod addresses)",
    )
    return parser


def advertise_address(args: argparse.Namespace) -> str:
    """The decoder's `--advertise` address (ValueError when it cannot work)."""
    if not args.advertise:
        return ""
    if args.service != "decoder":
        raise ValueError("--advertise is a decoder option (encoders relay to that address)")
    from services.common.relay import is_address

    if not is_address(args.advertise):
        raise ValueError(f"--advertise {args.advertise!r}: expected HOST:PORT")
    return args.advertise


def relay_targets(args: argparse.Namespace) -> tuple:
    """The `--relay-to` decoders as SDK connections (ValueError when they cannot work)."""
    if not args.relay_to:
        return ()
    if args.service != "encoder":
        raise ValueError("--relay-to is an encoder option (the decoder is relayed to)")
    from mcrave_client.connection import Connection
    from mcrave_client.errors import ClientError

    tls = (args.relay_tls_ca, args.relay_tls_cert, args.relay_tls_key)
    try:
        return tuple(
            Connection.from_files(
                t, *tls, args.relay_token_file, server_name=args.relay_tls_server_name
            )
            for t in args.relay_to
        )
    except ClientError as error:
        raise ValueError(f"--relay-to: {error}") from None


def models_dir(args: argparse.Namespace) -> Path:
    """The registry folder to serve; with `--pull-from` a trainer's versions are mirrored in."""
    if args.pull_from:
        from services.trainer.pull import start_mirror

        start_mirror(
            args.pull_from,
            args.models,
            args.tls_ca,
            args.tls_cert,
            args.tls_key,
            args.token_file,
            insecure=args.insecure,
        )
    if not args.models.is_dir():
        raise ValueError(f"{args.models}: model registry folder does not exist")
    return args.models


def missing_modules() -> list[str]:
    """The modules of `SERVE_MODULES` this environment lacks."""
    missing = []
    for name in SERVE_MODULES:
        try:
            found = importlib.util.find_spec(name) is not None
        except ModuleNotFoundError:  # a parent package is missing
            found = False
        if not found:
            missing.append(name)
    return missing


def main(argv: list[str]) -> int:
    """`argv`: ["serve", SERVICE, OPTIONS...]; returns the exit code."""
    missing = missing_modules()
    if missing:
        print(
            f"mcrave serve: {', '.join(missing)} not installed: serving needs the serve extra "
            "and the SDK: pip install -e clients/python -e '.[serve]'",
            file=sys.stderr,
        )
        return 2
    if argv[1:2] == ["trainer"]:  # the trainer has options of its own
        from services.trainer.cli import main as trainer_main

        return trainer_main(argv)
    args = build_parser().parse_args(argv[1:])
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from services.common.auth import ConfigError
    from services.common.options import endpoint_options
    from services.common.server import ServerConfig, serve

    module, port, metrics_port = SERVICES[args.service]
    service = importlib.import_module(module).SERVICE
    try:
        endpoint = endpoint_options(args)
        if args.port is None:
            endpoint["port"] = port
        if args.metrics_port is None and not args.no_metrics:
            endpoint["metrics_port"] = metrics_port
        cfg = ServerConfig(
            **endpoint,
            models=models_dir(args),
            poll_interval_s=args.poll_seconds,
            grace_s=args.grace_seconds,
            runtime=args.runtime,
            relay_to=relay_targets(args),
            advertise=advertise_address(args),
        )
        asyncio.run(serve(cfg, service, ready_file=args.ready_file))
    except (ConfigError, ValueError, OSError) as error:
        print(f"mcrave serve {args.service}: {error}", file=sys.stderr)
        return 2
    return 0
