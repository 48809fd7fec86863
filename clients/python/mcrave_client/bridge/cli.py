"""`mcrave-bridge`: stream audio to the encoder service, deliver latents (and decoded audio) to Max.

    mcrave-bridge --encoder 127.0.0.1:50051 --present 1 --file in.wav --send 127.0.0.1:7400 --start
    mcrave-bridge --encoder ... --decoder ... --input-device default --output-device default

Runs until Ctrl-C / SIGTERM (or, with --exit-at-end, until a file has been streamed).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

from mcrave_client.bridge.control import (
    DEFAULT_CONTROL_PORT,
    DEFAULT_SEND_PORT,
    Bridge,
    lookup_model,
)
from mcrave_client.bridge.sinks import DeviceSink, FileSink
from mcrave_client.bridge.sources import DeviceSource, FileSource, QueueSource
from mcrave_client.channels import parse_channel_set
from mcrave_client.cli import PRESENT_HELP, add_connection_args, connection
from mcrave_client.client import DecoderClient, EncoderClient
from mcrave_client.errors import ClientError
from mcrave_client.framing import FramingError


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mcrave-bridge", description=__doc__.splitlines()[0])
    p.add_argument("--encoder", required=True, metavar="HOST:PORT")
    p.add_argument("--decoder", metavar="HOST:PORT", help="also decode: audio to a device/file")
    p.add_argument("--model", help="model name (default: the encoder's only model)")
    p.add_argument("--version", type=int, default=0, help="model version (0 = latest)")
    p.add_argument("--present", required=True, help=PRESENT_HELP + " (sent to the encoder)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--file", type=Path, help="stream this file, paced in real time")
    src.add_argument("--input-device", metavar="NAME", help="live input (sounddevice/JACK)")
    src.add_argument("--audio-from-max", action="store_true", help="audio arrives as /mcrave/audio")
    p.add_argument("--decoded-out", type=Path, help="write decoded audio to this WAV file")
    p.add_argument("--output-device", metavar="NAME", help="play decoded audio on this device")
    p.add_argument(
        "--latent-only",
        action="store_true",
        help="send the decoder latents alone (default: with the present audio, for its spatial "
        "stage), like `mcrave infer --latent-only`",
    )
    p.add_argument("--osc-host", default="127.0.0.1", help="address the control socket binds")
    p.add_argument(
        "--osc-port", type=int, default=DEFAULT_CONTROL_PORT, help="control port (0 = any free)"
    )
    p.add_argument(
        "--send",
        type=_address,
        default=("127.0.0.1", DEFAULT_SEND_PORT),
        metavar="HOST:PORT",
        help="where latents, status and errors go (Max's udpreceive)",
    )
    p.add_argument(
        "--chunk",
        type=int,
        help="samples per channel per encoder chunk, a multiple of the model ratio (default: one "
        "latent frame)",
    )
    # the old spelling, in latent frames; hidden so that one unit shows in --help
    p.add_argument("--chunk-frames", type=int, help=argparse.SUPPRESS)
    p.add_argument("--jitter", type=int, help="jitter buffer frames (default 2*chunk+2)")
    p.add_argument("--prefill", type=int, help="frames buffered before the clock starts")
    p.add_argument("--start", action="store_true", help="start streaming at once")
    p.add_argument("--exit-at-end", action="store_true", help="exit when the stream ends")
    p.add_argument("--ready-file", type=Path, help="write the bound control port here")
    add_connection_args(p)
    return p


def _source_factory(args: argparse.Namespace):
    def make(info, chunk):
        if args.file is not None:
            return FileSource(str(args.file), info.channels, info.sample_rate, chunk)
        if args.input_device is not None:
            device = None if args.input_device == "default" else args.input_device
            return DeviceSource(info.channels, info.sample_rate, chunk, device)
        return QueueSource(info.channels, info.sample_rate, chunk)

    return make


def _sink_factory(args: argparse.Namespace):
    if args.decoded_out is not None:
        # trimmed by the latency, so the file lines up with the input sample for sample
        return lambda info: FileSink(
            str(args.decoded_out), info.channels, info.sample_rate, skip=info.latency
        )
    if args.output_device is not None:
        device = None if args.output_device == "default" else args.output_device
        return lambda info: DeviceSink(info.channels, info.sample_rate, device)
    return None


def chunk_frames(args: argparse.Namespace, ratio: int) -> int:
    """`--chunk` (samples) as latent frames, the unit the bridge streams in."""
    if args.chunk is None:
        return args.chunk_frames or 1
    if args.chunk <= 0 or args.chunk % ratio:
        raise ClientError(f"--chunk {args.chunk}: must be a positive multiple of the ratio {ratio}")
    return args.chunk // ratio


def run(args: argparse.Namespace) -> None:
    if (args.decoded_out or args.output_device or args.latent_only) and not args.decoder:
        raise ClientError("--decoded-out/--output-device/--latent-only need --decoder")
    encoder = EncoderClient(connection(args.encoder, args))
    decoder = DecoderClient(connection(args.decoder, args)) if args.decoder else None
    info = lookup_model(encoder, args.model, args.version)
    present = parse_channel_set(args.present, info.channels, info.channel_names)
    bridge = Bridge(
        encoder,
        decoder,
        model=info.ref.name,
        version=args.version,
        info=info,
        present=present,
        make_source=_source_factory(args),
        make_sink=_sink_factory(args),
        send_to=args.send,
        host=args.osc_host,
        port=args.osc_port,
        chunk_frames=chunk_frames(args, info.ratio),
        jitter=args.jitter,
        prefill=args.prefill,
        latent_only=args.latent_only,
    )
    host, port = bridge.address
    print(
        f"mcrave-bridge: control on osc.udp://{host}:{port}, sending to "
        f"{args.send[0]}:{args.send[1]}",
        flush=True,
    )
    if args.ready_file is not None:
        args.ready_file.write_text(f"{port}\n")
    signal.signal(signal.SIGTERM, lambda *_: bridge.close())
    if args.start:
        bridge.handle_local("/mcrave/start")
    if args.exit_at_end:
        threading.Thread(target=lambda: (bridge.ended.wait(), bridge.close()), daemon=True).start()
    try:
        bridge.serve()
    finally:
        bridge.close()
        encoder.close()
        if decoder is not None:
            decoder.close()
    if bridge.last_error is not None:
        raise ClientError(f"the stream failed: {bridge.last_error}")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="mcrave-bridge: %(message)s")
    try:
        run(args)
    except (ClientError, FramingError, OSError) as err:
        print(f"mcrave-bridge: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
