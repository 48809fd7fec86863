"""OSC on the wire: fast latent messages, control parsing, and a UDP endpoint.

Latent messages are encoded with numpy (big-endian int32/float32 per the OSC 1.0 spec) because a
frame goes out every few milliseconds; everything else uses python-osc. Every packet stays under
8192 bytes (python-osc's default receive limit, and Max's): a frame too large for one message is
sent as `/mcrave/latent/part` messages carrying the offset of their first dimension.
"""

from __future__ import annotations

import socket
from typing import Any

import numpy as np
from pythonosc import osc_packet
from pythonosc.osc_message_builder import OscMessageBuilder

MAX_PACKET = 8192
LATENT = "/mcrave/latent"
LATENT_PART = "/mcrave/latent/part"
# address, type tags and three int32 header arguments take < 64 bytes; each float costs 5 bytes
# (4 of data, 1 of type tag) plus padding
FLOATS_PER_PACKET = (MAX_PACKET - 64) // 5


def _pad(raw: bytes) -> bytes:
    """OSC strings end with a NUL and are padded to a multiple of 4 bytes."""
    raw += b"\0"
    return raw + b"\0" * (-len(raw) % 4)


def latent_packets(stream_id: int, frame: int, values: np.ndarray) -> list[bytes]:
    """One frame's D floats as OSC datagrams: one message, or parts when D is large."""
    values = np.asarray(values, dtype=">f4")
    if values.size <= FLOATS_PER_PACKET:
        return [_message(LATENT, (stream_id, frame), values)]
    return [
        _message(LATENT_PART, (stream_id, frame, start), values[start : start + FLOATS_PER_PACKET])
        for start in range(0, values.size, FLOATS_PER_PACKET)
    ]


def _message(address: str, ints: tuple[int, ...], floats: np.ndarray) -> bytes:
    tags = "," + "i" * len(ints) + "f" * floats.size
    head = _pad(address.encode()) + _pad(tags.encode())
    packet = head + np.asarray(ints, ">i4").tobytes() + floats.tobytes()
    return packet


def build(address: str, *args: Any) -> bytes:
    """A control/status message (str -> s, int -> i, float -> f)."""
    builder = OscMessageBuilder(address)
    for arg in args:
        builder.add_arg(arg)
    return builder.build().dgram


class MalformedPacket(ValueError):
    pass


def parse(datagram: bytes) -> list[tuple[str, list[Any]]]:
    """(address, args) of every message in a datagram (bundles flattened, in order)."""
    try:
        packet = osc_packet.OscPacket(datagram)
    except osc_packet.ParseError as exc:
        raise MalformedPacket(f"not a valid OSC packet ({len(datagram)} bytes): {exc}") from None
    return [(m.message.address, list(m.message.params)) for m in packet.messages]


class Endpoint:
    """A UDP socket bound to `host:port` (port 0 picks one) that sends and receives datagrams."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, timeout: float = 0.1) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, port))
        self.sock.settimeout(timeout)
        self.address = self.sock.getsockname()

    def recv(self) -> tuple[bytes, tuple[str, int]] | None:
        try:
            return self.sock.recvfrom(65536)
        except TimeoutError:
            return None

    def send(self, datagram: bytes, to: tuple[str, int]) -> None:
        self.sock.sendto(datagram, to)

    def close(self) -> None:
        self.sock.close()
