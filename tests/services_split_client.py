"""Client process of the split-machine test: streams a file's present channels through the encoder
and the latents into the decoder, then reports the output and both services' counters as JSON.

    python tests/services_split_client.py ENCODER DECODER ENC_METRICS DEC_METRICS IN.npy OUT.npy PRESENT
"""

from __future__ import annotations

import json
import sys
import urllib.request

import numpy as np
from prometheus_client.parser import text_string_to_metric_families
from services_helpers import config, decode, encode

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
    _, y = decode(decoder, config(version=started.model.version, present=(), chunk=CHUNK), latents)
    np.save(dst, y[started.latency : started.latency + len(x)])
    report = {
        "latent_bytes": sum(len(c.data) for c in latents),
        "latency": started.latency,
        "encoder": scrape(enc_metrics),
        "decoder": scrape(dec_metrics),
    }
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
