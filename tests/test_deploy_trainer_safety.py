"""Kill safety of the trainer service, with real processes:

- a job killed (SIGKILL, by the MCRAVE_FAULT hook) between writing a checkpoint and renaming it
  leaves the previous checkpoint as the loadable latest, and the job resumable;
- kill -9 of the trainer loses no job record: a new trainer re-attaches to the job that kept
  running, and marks one whose process died meanwhile INTERRUPTED and resumable.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from deploy_helpers import Services, make_data_root, wait_for
from mcrave_client.connection import Connection
from mcrave_client.proto import trainer_pb2
from mcrave_client.trainer import TrainerClient

pytestmark = pytest.mark.slow

OVERRIDES = ("train.phase1_steps=2", "train.validate_every=1000", "train.checkpoint_every=2")


def state(client: TrainerClient, job_id: str) -> str:
    return trainer_pb2.JobState.Name(client.get(job_id).state)


def connect(info: dict) -> TrainerClient:
    return TrainerClient(Connection(f"127.0.0.1:{info['port']}"))


def test_kill_between_checkpoint_write_and_rename_keeps_last_checkpoint(tmp_path):
    from mcrave.checkpoint import load_checkpoint

    data_root, models = make_data_root(tmp_path), tmp_path / "models"
    models.mkdir()
    with Services(tmp_path) as svc:
        client = connect(svc.trainer(data_root, models))
        # long enough that the cancel lands before the end (it stops the job early anyway)
        job = client.submit("ds", config="test", max_steps=500, overrides=OVERRIDES)
        wait_for(lambda: client.get(job.id).checkpoint_step >= 2, 120, "a first checkpoint")
        client.cancel(job.id)
        stopped = client.wait(job.id)
        assert state(client, job.id) == "CANCELLED" and stopped.resumable
        run = Path(tmp_path / "jobs" / "runs" / job.id)
        kept = load_checkpoint(run / "last.ckpt")["step"]
        assert kept == stopped.checkpoint_step >= 2  # cancel is graceful: a checkpoint, then stop

        # the resumed job dies by SIGKILL between the fsync of its next checkpoint and the rename
        svc.stop("trainer")
        client = connect(svc.trainer(data_root, models, env={"MCRAVE_FAULT": "kill_before_rename"}))
        client.resume(job.id)
        killed = client.wait(job.id)
        assert state(client, job.id) == "FAILED" and "SIGKILL" in killed.message
        assert killed.resumable
        (torn,) = (run / "checkpoints").glob(".step-*.ckpt.tmp-*")  # written, never renamed
        assert int(torn.name.split("-")[1].split(".")[0]) > kept
        assert load_checkpoint(run / "last.ckpt")["step"] == kept  # still the valid one

        client.close()


def test_kill9_of_the_trainer_loses_no_job_and_reconciles(tmp_path):
    data_root, models = make_data_root(tmp_path), tmp_path / "models"
    models.mkdir()
    with Services(tmp_path) as svc:
        client = connect(svc.trainer(data_root, models))
        survivor = client.submit("ds", config="test", max_steps=40, overrides=OVERRIDES)
        victim = client.submit("ds", config="test", max_steps=200, overrides=OVERRIDES)
        wait_for(lambda: client.get(victim.id).checkpoint_step >= 2, 120, "victim's checkpoint")
        client.close()

        os.kill(svc.named["trainer"].pid, signal.SIGKILL)
        svc.named["trainer"].wait()
        # while no trainer runs, one job's processes die too (a node restart, an OOM kill)
        handle = _handle(tmp_path, victim.id)
        os.killpg(handle["pid"], signal.SIGKILL)

        client = connect(svc.trainer(data_root, models))
        jobs = {j.id: j for j in client.list()}
        assert set(jobs) == {survivor.id, victim.id}  # nothing lost
        assert jobs[survivor.id].state == trainer_pb2.RUNNING  # re-attached
        assert state(client, victim.id) == "INTERRUPTED"
        assert client.get(victim.id).resumable
        # the survivor kept running without its trainer; the new trainer follows it to the end
        done = client.wait(survivor.id)
        assert state(client, survivor.id) == "SUCCEEDED" and done.step == 40
        client.close()


def _handle(tmp: Path, job_id: str) -> dict:
    """The backend handle from the job store, read as the next trainer will read it."""
    from services.trainer.store import JobStore

    store = JobStore(tmp / "jobs")
    try:
        record = store.get(job_id)
        assert record is not None
        return record.handle
    finally:
        store.close()
