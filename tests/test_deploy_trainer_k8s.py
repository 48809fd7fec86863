"""The kubernetes backend, driven through a real trainer server over gRPC, with the official
`kubernetes` client talking HTTP to a local server that replays recorded API responses
(deploy/k8s/recorded/) and validates every object sent as a strict API server would."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest
from deploy_helpers import ReplayApiServer, make_data_root, require_pytorchjob_schema
from mcrave_client.proto import trainer_pb2, trainer_pb2_grpc

from services.trainer.k8s_backend import KubernetesBackend, parse_volumes
from services.trainer.server import TrainerConfig, start_trainer

pytest.importorskip("kubernetes", reason="pip install kubernetes (dev extra)")

FINAL = {trainer_pb2.SUCCEEDED, trainer_pb2.FAILED, trainer_pb2.CANCELLED, trainer_pb2.INTERRUPTED}


async def submit_and_watch(
    tmp: Path, replay: ReplayApiServer, job_id: str, cancel: bool, log_lines: int
) -> list[trainer_pb2.JobEvent]:
    from kubernetes import client

    api = client.ApiClient(client.Configuration(host=replay.url))
    volumes = parse_volumes("mcrave-data=/data,mcrave-runs=/runs")
    backend = KubernetesBackend(api, "mcrave", "mcrave:test", volumes)
    (tmp / "models").mkdir()
    cfg = TrainerConfig(
        jobs_dir=tmp / "jobs",
        data_root=make_data_root(tmp),
        models=tmp / "models",
        backend="kubernetes",
        extra_backends={"kubernetes": backend},
        poll_s=0.05,
    )
    running = await start_trainer(cfg)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = trainer_pb2_grpc.TrainerServiceStub(channel)
            spec = trainer_pb2.JobSpec(
                dataset="ds", config="test", max_steps=100,
                resources=trainer_pb2.Resources(nnodes=2, gpus_per_node=1),
            )  # fmt: skip
            await stub.SubmitJob(trainer_pb2.SubmitJobRequest(spec=spec, job_id=job_id))
            events = []
            request = trainer_pb2.WatchJobRequest(job_id=job_id, log_lines=log_lines)
            async for event in stub.WatchJob(request, timeout=30):
                events.append(event)
                if cancel and len(events) == 1:
                    await stub.CancelJob(trainer_pb2.CancelJobRequest(job_id=job_id))
            return events
    finally:
        await running.stop(0)
        api.close()


def run(tmp: Path, recording: str, job_id: str, cancel: bool = False, log_lines: int = 0):
    replay = ReplayApiServer(recording)
    try:
        events = asyncio.run(submit_and_watch(tmp, replay, job_id, cancel, log_lines))
    finally:
        replay.close()
    assert not replay.invalid, replay.invalid
    assert not replay.unexpected, replay.unexpected
    return events, replay


def sent(replay: ReplayApiServer, method: str, path: str) -> list:
    return [body for m, p, body in replay.requests if m == method and p.split("?")[0] == path]


def test_indexed_job_without_operator_runs_to_completion_and_is_cleaned_up(tmp_path):
    events, replay = run(tmp_path, "indexed-job.json", "idx-1", log_lines=2)
    assert events[-1].job.state == trainer_pb2.SUCCEEDED and events[-1].kind == "state"
    assert [e.job.state in FINAL for e in events].count(True) == 1  # ends at its final state
    # the log tail comes from rank 0's pod (index 0 sorts first)
    assert list(events[0].log_tail) == ["step 1200/20000 loss=3.41", "step 1210/20000 loss=3.38"]

    (svc,) = sent(replay, "POST", "/api/v1/namespaces/mcrave/services")
    (job,) = sent(replay, "POST", "/apis/batch/v1/namespaces/mcrave/jobs")
    assert svc["spec"]["clusterIP"] == "None" and svc["spec"]["publishNotReadyAddresses"]
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert container["command"] == ["torchrun", "-m", "mcrave.cli.main"]
    assert env["PET_NNODES"] == "2" and env["PET_MASTER_ADDR"] == "mcrave-idx-1-0-0.mcrave-idx-1-0"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    args = container["args"]
    assert args[:2] == ["train", str((tmp_path / "data" / "ds").resolve())]
    assert args[args.index("--metrics-port") + 1] == "9100" and "--resume" not in args
    assert {m["mountPath"] for m in container["volumeMounts"]} >= {"/data", "/runs", "/dev/shm"}
    assert job["metadata"]["labels"]["mcrave.io/job"] == "idx-1"
    # the service was created before the job (rank 0's DNS name must exist), both deleted after
    order = [(m, p.split("?")[0]) for m, p, _ in replay.requests]
    assert order.index(("POST", "/api/v1/namespaces/mcrave/services")) < order.index(
        ("POST", "/apis/batch/v1/namespaces/mcrave/jobs")
    )
    assert replay.seen("DELETE", "/apis/batch/v1/namespaces/mcrave/jobs/mcrave-idx-1-0")
    assert replay.seen("DELETE", "/api/v1/namespaces/mcrave/services/mcrave-idx-1-0")


def test_failed_job_reports_the_pod_reason_and_is_cleaned_up(tmp_path):
    events, replay = run(tmp_path, "indexed-job-failure.json", "oom-1")
    job = events[-1].job
    assert job.state == trainer_pb2.FAILED and not job.resumable  # no checkpoint was written
    assert "backoff limit" in job.message and "OOMKilled" in job.message
    assert replay.seen("DELETE", "/apis/batch/v1/namespaces/mcrave/jobs/mcrave-oom-1-0")


def test_pytorchjob_cancel_suspends_waits_for_pods_then_deletes(tmp_path):
    require_pytorchjob_schema()
    events, replay = run(tmp_path, "pytorchjob-cancel.json", "ptj-1", cancel=True)
    states = [trainer_pb2.JobState.Name(e.job.state) for e in events]
    assert states[0] == "RUNNING" and "CANCELLING" in states and states[-1] == "CANCELLED"

    base = "/apis/kubeflow.org/v1/namespaces/mcrave/pytorchjobs"
    (job,) = sent(replay, "POST", base)
    master = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]
    assert (
        master["name"] == "pytorch"
        and job["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] == 1
    )
    assert not [e for e in master["env"] if e["name"] == "PET_NNODES"]  # the operator sets it
    (patch,) = sent(replay, "PATCH", f"{base}/mcrave-ptj-1-0")
    assert patch == {"spec": {"runPolicy": {"suspend": True}}}
    # deleted only after the pod list came back empty (pods had their grace to checkpoint)
    order = [(m, p.split("?")[0]) for m, p, _ in replay.requests]
    deleted = order.index(("DELETE", f"{base}/mcrave-ptj-1-0"))
    pod_lists = [i for i, r in enumerate(order) if r == ("GET", "/api/v1/namespaces/mcrave/pods")]
    assert len(pod_lists) >= 2 and pod_lists[-1] < deleted


def test_replay_server_refuses_what_a_strict_api_server_would():
    """The validation is a real check: a misspelled field in a sent PyTorchJob is a 422."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    from services.trainer.k8s_manifests import TrainPodSpec, pytorch_job

    require_pytorchjob_schema()
    replay = ReplayApiServer("pytorchjob-cancel.json")
    api = client.ApiClient(client.Configuration(host=replay.url))
    try:
        body = pytorch_job(TrainPodSpec(name="mcrave-ptj-1-0", image="i", train_args=["train"]))
        body["spec"]["runPolicy"]["backofLimit"] = 3
        with pytest.raises(ApiException) as err:
            client.CustomObjectsApi(api).create_namespaced_custom_object(
                "kubeflow.org", "v1", "mcrave", "pytorchjobs", body
            )
        assert err.value.status == 422 and "backofLimit" in replay.invalid[0]
    finally:
        api.close()
        replay.close()
    with pytest.raises(ValueError, match="PVC_NAME=/mount/path"):
        parse_volumes("mcrave-data:/data")
