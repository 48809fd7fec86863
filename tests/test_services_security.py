"""TLS, mTLS and bearer tokens on a real encoder server, with certificates made by the test."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc
from mcrave_client.proto import encoder_pb2_grpc, models_pb2, models_pb2_grpc
from services_helpers import ServerThread, audio, config, encode_requests, publish_tiny

from services.common.auth import ConfigError
from services.encoder.servicer import SERVICE as ENCODER


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(
    subject: str, key, issuer: str, issuer_key, *, ca: bool, san: bool = False
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if san:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _pem_key(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, Path]:
    """A CA, a server cert for 127.0.0.1, a client cert it signed, and a client cert of a rogue CA."""
    d = tmp_path_factory.mktemp("pki")
    files: dict[str, bytes] = {}
    ca_key, rogue_key = (
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP256R1()),
    )
    files["ca.pem"] = _pem(_cert("test ca", ca_key, "test ca", ca_key, ca=True))
    for who, issuer, issuer_key in (
        ("server", "test ca", ca_key),
        ("client", "test ca", ca_key),
        ("rogue", "rogue ca", rogue_key),
    ):
        key = ec.generate_private_key(ec.SECP256R1())
        files[f"{who}.key"] = _pem_key(key)
        files[f"{who}.pem"] = _pem(
            _cert(who, key, issuer, issuer_key, ca=False, san=who == "server")
        )
    for name, data in files.items():
        (d / name).write_bytes(data)
    (d / "token").write_text("s3cret-token\n")
    return {name: d / name for name in [*files, "token"]}


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("reg") / "models"
    root.mkdir()
    publish_tiny(root)
    return root


def _list(ch: grpc.Channel, token: str | None = None) -> int:
    md = [("authorization", f"Bearer {token}")] if token else None
    stub = models_pb2_grpc.ModelServiceStub(ch)
    return len(stub.ListModels(models_pb2.ListModelsRequest(), metadata=md, timeout=5).models)


def _secure(target: str, pki: dict[str, Path], client: str | None) -> grpc.Channel:
    creds = grpc.ssl_channel_credentials(
        root_certificates=pki["ca.pem"].read_bytes(),
        private_key=pki[f"{client}.key"].read_bytes() if client else None,
        certificate_chain=pki[f"{client}.pem"].read_bytes() if client else None,
    )
    return grpc.secure_channel(target, creds)


def test_tls_and_mtls(models, pki) -> None:
    tls = ServerThread(
        ENCODER, models, tls_cert=str(pki["server.pem"]), tls_key=str(pki["server.key"])
    )
    try:
        with _secure(tls.target, pki, None) as ch:
            assert _list(ch) == 1
        with grpc.insecure_channel(tls.target) as ch, pytest.raises(grpc.RpcError) as err:
            _list(ch)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        tls.stop()
    mtls = ServerThread(
        ENCODER,
        models,
        tls_cert=str(pki["server.pem"]),
        tls_key=str(pki["server.key"]),
        tls_ca=str(pki["ca.pem"]),
    )
    try:
        with _secure(mtls.target, pki, "client") as ch:
            assert _list(ch) == 1
        for client in (
            None,
            "rogue",
        ):  # no certificate, or one our CA did not sign: handshake refused
            with _secure(mtls.target, pki, client) as ch, pytest.raises(grpc.RpcError) as err:
                _list(ch)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        mtls.stop()


def test_bearer_token(models, pki) -> None:
    server = ServerThread(ENCODER, models, token_file=str(pki["token"]))
    try:
        with grpc.insecure_channel(server.target) as ch:
            assert _list(ch, "s3cret-token") == 1
            for token in (None, "wrong"):
                with pytest.raises(grpc.RpcError) as err:
                    _list(ch, token)
                assert (
                    err.value.code() == grpc.StatusCode.UNAUTHENTICATED
                    and "bearer token" in err.value.details()
                )
            stub = encoder_pb2_grpc.EncoderServiceStub(ch)
            requests = list(encode_requests(config(chunk=1024), audio(2048), 1024))
            with pytest.raises(grpc.RpcError) as err:
                list(stub.Encode(iter(requests), timeout=5))
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
            replies = list(
                stub.Encode(
                    iter(requests), metadata=[("authorization", "Bearer s3cret-token")], timeout=5
                )
            )
            assert replies[-1].latents.final
            # probes carry no headers: health stays open
            status = (
                health_pb2_grpc.HealthStub(ch)
                .Check(health_pb2.HealthCheckRequest(), timeout=5)
                .status
            )
            assert status == health_pb2.HealthCheckResponse.SERVING
        assert (
            server.sample(
                "mcrave_errors_total", {"method": "ListModels", "code": "UNAUTHENTICATED"}
            )
            == 2
        )
    finally:
        server.stop()


def test_token_over_plaintext_refused_off_loopback(models, pki) -> None:
    with pytest.raises(ConfigError, match="only on loopback"):
        ServerThread(ENCODER, models, host="0.0.0.0", token_file=str(pki["token"]))
    # with TLS the same token is fine anywhere
    server = ServerThread(
        ENCODER,
        models,
        host="0.0.0.0",
        token_file=str(pki["token"]),
        tls_cert=str(pki["server.pem"]),
        tls_key=str(pki["server.key"]),
    )
    try:
        with _secure(server.target, pki, None) as ch:
            assert _list(ch, "s3cret-token") == 1
    finally:
        server.stop()
