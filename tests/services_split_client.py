"""Client process of the split-machine test: streams a file's present channels through the encoder
and the latents into the decoder twice, latent-only and then with the present channels' audio
beside the latents (the spatial stage), and reports both outputs and the services' counters after
each as JSON; then a third time through the SDK's relayed pipeline (the encoder forwards).

    python tests/services_split_client.py ENCODER DECODER ENC_METRICS DEC_METRICS IN.npy OUT.npz PRESENT
"""

from __future__ import annotations

import json
import sys
import urllib.request

import numpy as np
from mcrave_client import DecoderClient, EncoderClient, Pipeline
from mcrave_client.framing import iter_chunks
from prometheus_client.parser import text_string_to_metric_families
from services_helpers import config, decode, encode, with_audio

CHUNK = 1024


def scrape(address: str) -> dict[str, float]:
    """{'name{label=value,...}': value} of every sample on a /metrics page."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as r:
        text = r.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            samples[f"{s.name}{{{labels}}}"] = s.value
    return samples


def main(argv: list[str]) -> int:
    encoder, decoder, enc_metrics, dec_metrics, src, dst, present = argv
    x = np.load(src)  # [frames, N]
    present_set = tuple(int(c) for c in present.split(","))
    started, latents = encode(encoder, config(present=present_set, chunk=CHUNK), x)
    version = started.model.version
    report = {
        "latent_bytes": sum(len(c.data) for c in latents),
        "latency": started.latency,
        "encoder": scrape(enc_metrics),
    }
    lat = started.latency
    _, y = decode(decoder, config(version=version, present=(), chunk=CHUNK), latents)
    outputs = {"latent_only": y[lat : lat + len(x)]}
    report["decoder_latent_only"] = scrape(dec_metrics)
    spatial = with_audio(latents, x, present_set, CHUNK)
    _, y = decode(decoder, config(version=version, present=present_set, chunk=CHUNK), spatial)
    outputs["spatial"] = y[lat : lat + len(x)]
    report["decoder_spatial"] = scrape(dec_metrics)
    report["audio_bytes"] = sum(len(c.audio) for c in spatial)
    with Pipeline(EncoderClient(encoder), DecoderClient(decoder), relay=True) as pipeline:
        stream = pipeline.stream("tiny", present_set, CHUNK, version=version)
        blocks = [b.audio for b in stream.run(iter_chunks(x[:, list(present_set)].T, CHUNK))]
    outputs["relayed"] = np.concatenate(blocks, axis=1).T[lat : lat + len(x)]
    report["encoder_relayed"] = scrape(enc_metrics)
    report["decoder_relayed"] = scrape(dec_metrics)
    np.savez(dst, **outputs)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
