"""End to end on this machine, every part a real process: trainer, encoder, decoder, a second
decoder that pulls from the trainer, a real Prometheus loading deploy/'s rules.

submit (test preset, 2 ranks under torchrun, via `mcrave-client train submit --watch`) ->
watched to SUCCEEDED -> publish -> the running decoder serves the new version without a restart
(ListModels) -> a decoder with --pull-from gets the same weights -> a second publish reaches both
-> audio streamed through encoder and decoder -> every dashboard query and recording rule
returns data in Prometheus.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest
from deploy_helpers import (
    Services,
    check_queries,
    make_data_root,
    prometheus_config,
    start_prometheus,
    wait_for,
)
from mcrave_client.client import DecoderClient, EncoderClient
from mcrave_client.connection import Connection
from mcrave_client.errors import ClientError
from mcrave_client.trainer import TrainerClient

pytestmark = pytest.mark.slow


def listed(client: DecoderClient | EncoderClient, name: str) -> int:
    """The latest version of `name` that the service lists (0 = not listed)."""
    return max((m.ref.version for m in client.list_models() if m.ref.name == name), default=0)


def test_submit_watch_publish_hot_reload_pull_and_dashboard(tmp_path):
    data_root = make_data_root(tmp_path)
    models, pulled, sd_file = tmp_path / "models", tmp_path / "models-b", tmp_path / "sd.json"
    models.mkdir()
    with Services(tmp_path) as svc:
        # trainer first (the pulling decoder needs its port), the rest start in parallel
        trainer = svc.trainer(data_root, models, "--sd-file", str(sd_file))
        target = f"127.0.0.1:{trainer['port']}"
        svc.spawn_service("encoder", models)
        svc.spawn_service("decoder", models)
        # a decoder on "another machine": own empty registry, pulling from the trainer
        svc.spawn_service("decoder", pulled, "--pull-from", target, name="decoder-b")
        encoder, decoder, remote = (svc.ready(n) for n in ("encoder", "decoder", "decoder-b"))
        prom_cfg = prometheus_config(
            tmp_path,
            {
                "encoder": f"127.0.0.1:{encoder['metrics_port']}",
                "decoder": f"127.0.0.1:{decoder['metrics_port']}",
                "trainer": f"127.0.0.1:{trainer['metrics_port']}",
            },
            sd_file,
        )
        prometheus, prom_url = start_prometheus(tmp_path, prom_cfg)
        svc.procs.append(prometheus)

        # submit and watch to the end through the CLI
        submit = (
            "submit ds --config test --steps 10 --channels 2 --set train.checkpoint_every=5 "
            "--set train.phase1_steps=5 --set train.validate_every=1000 --name demo --watch "
            "--nproc-per-node 2"  # two ranks: the local backend launches torchrun
        ).split()
        cli = subprocess.run(
            [sys.executable, "-m", "mcrave_client.trainer", *submit, "--trainer", target],
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert cli.returncode == 0, cli.stdout + cli.stderr
        job_id, *events = cli.stdout.splitlines()
        kinds = [line.split("]")[0].lstrip("[") for line in events]
        assert kinds[0] == "snapshot" and kinds[-1] == "state" and "SUCCEEDED" in events[-1]
        assert "checkpoint" in kinds and "step" in kinds
        assert any("spectral=" in line or "loss=" in line for line in events)

        trainer_client = TrainerClient(Connection(target))
        job = trainer_client.get(job_id)
        assert (job.step, job.max_steps, job.checkpoint_step) == (10, 10, 10)
        assert job.losses and job.x_realtime > 0
        progress = (tmp_path / "jobs" / "runs" / job_id / "progress.jsonl").read_text()
        assert json.loads(progress.splitlines()[0])["world"] == 2
        assert [j.id for j in trainer_client.list(("SUCCEEDED",))] == [job_id]
        for refused, code in (
            (lambda: trainer_client.submit("ds", job_id=job_id), "ALREADY_EXISTS"),
            (lambda: trainer_client.cancel(job_id), "FAILED_PRECONDITION"),
            (lambda: trainer_client.resume(job_id), "FAILED_PRECONDITION"),
        ):
            with pytest.raises(ClientError, match=code):
                refused()

        # publish: the running decoder and encoder load it with no restart
        dec = DecoderClient(Connection(f"127.0.0.1:{decoder['port']}"))
        enc = EncoderClient(Connection(f"127.0.0.1:{encoder['port']}"))
        assert listed(dec, "demo") == 0
        published = trainer_client.publish(job_id)
        assert (published.name, published.version, published.step) == ("demo", 1, 10)
        assert (models / "demo" / "1" / "model.ts").is_file()  # nn~ export by default
        wait_for(lambda: listed(dec, "demo") == 1 and listed(enc, "demo") == 1, 60, "hot reload")
        assert svc.alive("decoder") and svc.alive("encoder")  # the same processes: no restart

        # the pulling decoder gets the same weights, also without a restart
        dec_b = DecoderClient(Connection(f"127.0.0.1:{remote['port']}"))
        wait_for(lambda: listed(dec_b, "demo") == 1, 60, "pull of v1")
        assert (
            dec_b.get_model("demo", 1).ref.fingerprint == dec.get_model("demo", 1).ref.fingerprint
        )

        # a second publish reaches both, still without restarts
        assert trainer_client.publish(job_id, torchscript=False).version == 2
        wait_for(lambda: listed(dec, "demo") == 2 and listed(dec_b, "demo") == 2, 60, "v2")
        assert trainer_client.get(job_id).published == ["demo/1", "demo/2"]

        # serving traffic for the dashboard: audio through encoder -> decoder, and one error
        info = enc.get_model("demo", 2)
        chunk = info.ratio * 4
        rng = np.random.default_rng(0)
        chunks = [0.1 * rng.standard_normal((1, chunk)).astype(np.float32) for _ in range(12)]
        decoded = list(dec.decode(info, enc.encode(info, chunks, [1], chunk), chunk))
        assert (
            decoded[0].audio.shape[0] == 2 and sum(d.audio.shape[1] for d in decoded) >= chunk * 12
        )
        with pytest.raises(ClientError, match="NOT_FOUND"):
            dec.get_model("no-such-model")

        deadline = time.time() + 30
        while True:  # scrapes and rule evaluations run every second
            empty = [e for e, n in check_queries(prom_url, rate_interval="30s").items() if not n]
            if not empty or time.time() > deadline:
                break
            time.sleep(1)
        assert not empty, f"no data in Prometheus for: {empty}"
        for client in (trainer_client, dec, dec_b, enc):
            client.close()
