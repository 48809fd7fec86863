"""SDK test helpers: encoder/decoder services as real subprocesses (`mcrave serve`) on port 0."""

from __future__ import annotations

import datetime
import ipaddress
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import soundfile as sf
import torch
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from service_procs import services  # noqa: E402  (the SDK tests start real services with it)

__all__ = ["REPO", "free_port", "make_pki", "services", "stereo_file", "tiny_stack"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_pki(folder: Path) -> dict[str, Path]:
    """A CA plus a server certificate (SAN 127.0.0.1/localhost) and a client certificate."""
    now = datetime.datetime.now(datetime.UTC)

    def issue(cn: str, key, issuer_name, issuer_key, ca: bool) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(issuer_name or x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
        return builder.sign(issuer_key or key, hashes.SHA256())

    paths = {}
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = issue("mcrave-test-ca", ca_key, None, None, ca=True)
    for role, (cert, key) in {
        "ca": (ca, ca_key),
        **{
            r: (issue(f"mcrave-{r}", k, ca.subject, ca_key, ca=False), k)
            for r, k in (
                ("server", ec.generate_private_key(ec.SECP256R1())),
                ("client", ec.generate_private_key(ec.SECP256R1())),
            )
        },
    }.items():
        paths[f"{role}_cert"] = folder / f"{role}.crt"
        paths[f"{role}_cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        paths[f"{role}_key"] = folder / f"{role}.key"
        paths[f"{role}_key"].write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return paths


def stereo_file(path: Path, seconds: float = 1.0, sr: int = 44100, seed: int = 0) -> np.ndarray:
    """A random-phase stereo test signal written as float WAV; returns it as (2, T)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    audio = np.stack(
        [
            0.3 * np.sin(2 * np.pi * 220 * t + rng.uniform(0, 6))
            + 0.05 * rng.standard_normal(t.size),
            0.3 * np.sin(2 * np.pi * 330 * t + rng.uniform(0, 6))
            + 0.05 * rng.standard_normal(t.size),
        ]
    ).astype(np.float32)
    sf.write(path, audio.T, sr, subtype="FLOAT")
    return audio


@contextmanager
def tiny_stack(tmp: Path, seconds: float) -> Iterator[SimpleNamespace]:
    """A registry with the untrained `tiny` model, a stereo `in.wav` of `seconds`, and encoder and
    decoder services serving it, each in its own process."""
    from services_helpers import publish_tiny

    torch.set_num_threads(1)
    models = tmp / "models"
    models.mkdir()
    publish_tiny(models, "tiny")
    audio = stereo_file(tmp / "in.wav", seconds=seconds)
    with services(models, tmp) as (enc, dec):
        yield SimpleNamespace(tmp=tmp, models=models, enc=enc, dec=dec, audio=audio)
