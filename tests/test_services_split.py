"""Encoder and decoder on separate "machines": own processes, own network namespaces joined by a
veth pair (when root and `ip netns` work; loopback otherwise), the client in a third process.
A third pass is relayed: the encoder forwards to the decoder across the link itself.

From the services' own counters: the encoder received exactly frames x |present| x 4 bytes of
audio; a latent-only decoder stream received only latents, a spatial one the latents plus the
present channels' audio (frames padded to whole latent frames x |present| x 4; the tail flush
carries none). Both equal `mcrave infer` (with and without `--latent-only`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import pytest
import torch
from services_helpers import CliServer, audio, publish_tiny

from mcrave.inference import infer_array
from services.common.registry_watch import load_version

ROOT = Path(__file__).resolve().parents[1]
ENC_IP, DEC_IP = "10.77.0.1", "10.77.0.2"


def _run(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True, timeout=20)


def _namespaces(stack: ExitStack) -> tuple[list[str], list[str], str, str] | None:
    """Two namespaces joined by a veth pair: (enc prefix, dec prefix, enc ip, dec ip); None if impossible."""
    if os.geteuid() != 0:
        return None
    tag = f"{os.getpid() % 100000}"
    ns_enc, ns_dec = f"mcrave-enc-{tag}", f"mcrave-dec-{tag}"
    try:
        for ns in (ns_enc, ns_dec):
            _run("ip", "netns", "add", ns)
            stack.callback(subprocess.run, ["ip", "netns", "del", ns], capture_output=True)
        _run("ip", "link", "add", f"mce{tag}", "type", "veth", "peer", "name", f"mcd{tag}")
        for ns, dev, ip in ((ns_enc, f"mce{tag}", ENC_IP), (ns_dec, f"mcd{tag}", DEC_IP)):
            _run("ip", "link", "set", dev, "netns", ns)
            _run("ip", "-n", ns, "addr", "add", f"{ip}/30", "dev", dev)
            _run("ip", "-n", ns, "link", "set", dev, "up")
            _run("ip", "-n", ns, "link", "set", "lo", "up")
    except (OSError, subprocess.SubprocessError):
        stack.close()
        return None
    return ["ip", "netns", "exec", ns_enc], ["ip", "netns", "exec", ns_dec], ENC_IP, DEC_IP


def test_split_encoder_decoder_client(tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    publish_tiny(models)
    x = audio(20000, seed=21)
    np.save(tmp_path / "in.npy", x)
    with ExitStack() as stack:
        ns = _namespaces(stack)
        enc_prefix, dec_prefix, enc_ip, dec_ip = ns or ([], [], "127.0.0.1", "127.0.0.1")
        # the decoder first: the encoder relays to it (--relay-to names its address)
        servers = []
        for service, prefix, host in (
            ("decoder", dec_prefix, dec_ip),
            ("encoder", enc_prefix, enc_ip),
        ):
            relay = ("--relay-to", f"{dec_ip}:{servers[0].wait_ready()['port']}") if servers else ()
            servers.append(
                CliServer(
                    service,
                    models,
                    tmp_path / f"{service}.json",
                    prefix=tuple(prefix),
                    host=host,
                    extra=("--metrics-host", host, *relay),  # scraped from the other machine
                )
            )
            stack.callback(servers[-1].terminate)
        dec, enc = (server.wait_ready() for server in servers)
        # the client lives beside the encoder (the machine with the microphones) and reaches the
        # decoder across the veth link
        client = subprocess.run(
            [
                *enc_prefix,
                sys.executable,
                str(ROOT / "tests" / "services_split_client.py"),
                f"{enc_ip}:{enc['port']}",
                f"{dec_ip}:{dec['port']}",
                f"{enc_ip}:{enc['metrics_port']}",
                f"{dec_ip}:{dec['metrics_port']}",
                str(tmp_path / "in.npy"),
                str(tmp_path / "out.npz"),
                "1",
            ],
            env={**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'tests'}", "OMP_NUM_THREADS": "1"},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert client.returncode == 0, client.stderr[-3000:]
        assert enc["pid"] != dec["pid"]
    report = json.loads(client.stdout)
    e, d, d2 = report["encoder"], report["decoder_latent_only"], report["decoder_spatial"]
    pcm, latent = (f"mcrave_received_bytes_total{{kind={k},model=tiny}}" for k in ("pcm", "latent"))
    assert e[pcm] == len(x) * 1 * 4  # frames x |present| x 4
    assert latent not in e
    # latent-only: the decoder saw latents and no audio
    assert d[latent] == report["latent_bytes"]
    assert pcm not in d
    assert d["mcrave_sent_bytes_total{kind=pcm,model=tiny}"] > 0
    # spatial: the same latents again, plus the present channel's audio, the ragged last chunk
    # padded to whole latent frames (20000 -> 20224 = 79 x ratio 256), none with the tail flush
    assert d2[latent] == 2 * report["latent_bytes"]
    assert d2[pcm] == report["audio_bytes"] == -(-len(x) // 256) * 256 * 1 * 4
    # relayed (the encoder forwards to the decoder across the link): the same bytes once more
    e3, d3 = report["encoder_relayed"], report["decoder_relayed"]
    assert e3[pcm] == 2 * e[pcm]
    assert d3[latent] == 3 * report["latent_bytes"] and d3[pcm] == 2 * report["audio_bytes"]
    engine = load_version(models / "tiny" / "1").engine
    out = np.load(tmp_path / "out.npz")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the tiny model on 2 threads of a busy machine: ~100x slower
    try:
        want_latent = infer_array(engine, x[:, [1]].T, present=[1], chunk=1024, latent_only=True)
        want = infer_array(engine, x[:, [1]].T, present=[1], chunk=1024)
    finally:
        torch.set_num_threads(threads)
    np.testing.assert_allclose(out["latent_only"].T, want_latent, atol=1e-4)  # --latent-only
    np.testing.assert_allclose(out["spatial"].T, want, atol=1e-4)  # mcrave infer
    np.testing.assert_array_equal(out["relayed"], out["spatial"])
    if ns is None:
        pytest.skip("ran on loopback: network namespaces need root and `ip netns`")
