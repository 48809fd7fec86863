"""Model benchmark: parameters, offline and streaming speed (x realtime), peak memory.

Speed is audio seconds per wall second (x RT, higher is better). Streaming runs encode + decode
per step through `StreamingEngine` (the path the services use) for one stream and for 16 streams
batched together (aggregate audio seconds). When a side Python with acids-rave is given
(`--rave-python`, see bench/rave_side_venv.sh), causal RAVE v2 is timed in the same run (eager,
with its cached streaming convs) and ratios are printed.

    python bench/model_bench.py               # full grid (minutes)
    python bench/model_bench.py --quick       # smoke run
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from mcrave.config import preset
from mcrave.model import MCRave
from mcrave.streaming import StreamingEngine

RAVE_SNIPPET = r"""
import json, os, statistics, sys, time, torch, gin
torch.set_num_threads(int(sys.argv[1]))
import rave
import cached_conv as cc
cc.use_cached_conv(True)  # streaming convs, as in RAVE's nn~ export
configs = os.path.join(os.path.dirname(rave.__file__), "configs")
gin.add_config_file_search_path(os.path.dirname(rave.__file__))
gin.add_config_file_search_path(configs)
gin.parse_config_files_and_bindings([os.path.join(configs, "v2.gin"), os.path.join(configs, "causal.gin")], [])
model = rave.RAVE().eval()
buffer = int(sys.argv[2])
seconds = float(sys.argv[3])
out = {}
for batch in (1, 16):
    x = torch.randn(batch, 1, buffer)
    with torch.no_grad():
        step = lambda: model.decode(model.encoder.reparametrize(model.encode(x))[0])
        for _ in range(2):
            step()
        times = []
        t_end = time.perf_counter() + seconds
        while time.perf_counter() < t_end or len(times) < 3:
            t = time.perf_counter(); step(); times.append(time.perf_counter() - t)
    out[batch] = batch * buffer / 44100 / statistics.median(times)
print(json.dumps(out))
"""
