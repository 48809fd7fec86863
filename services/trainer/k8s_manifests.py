"""Kubernetes objects for one training job: a Kubeflow PyTorchJob, or an Indexed Job + headless
Service where the operator is absent.

Pure functions from a `TrainPodSpec` to plain dicts: the kubernetes backend sends exactly these,
the tests validate them (kubernetes-validate strict, the PyTorchJob CRD schema) and
`deploy/k8s/training/*.yaml` are their rendered examples (`python -m services.trainer.k8s_manifests
--write deploy/k8s/training`; a test proves the files current). Every launcher drives torchrun
through `PET_*` variables, so the command carries no rendezvous flags.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

PYTORCHJOB_PORT = 23456
METRICS_PORT = 9100
COMPLETION_INDEX = "metadata.annotations['batch.kubernetes.io/job-completion-index']"
_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]{0,40}[a-z0-9])?$")


@dataclass(frozen=True)
class TrainPodSpec:
    """What one training job needs from the cluster (the trainer fills it from a SubmitJob)."""

    name: str  # object name; also the rank-0 host prefix, so a short DNS label
    image: str
    train_args: list[str]  # after `torchrun -m mcrave.cli.main`: ["train", DATASET, ...]
    nnodes: int = 1
    nproc_per_node: int = 1
    gpus_per_node: int = 0
    cpu: str = "2"
    memory: str = "4Gi"
    volumes: dict[str, str] = field(default_factory=dict)  # PVC claim name -> mount path
    labels: dict[str, str] = field(default_factory=dict)
    grace_seconds: int = 120  # SIGTERM -> final checkpoint must fit in here

    def __post_init__(self) -> None:
        if not _DNS_LABEL.match(self.name):
            raise ValueError(f"job name {self.name!r} is not a DNS label of <= 42 characters")
        if self.nnodes < 1 or self.nproc_per_node < 1 or self.gpus_per_node < 0:
            raise ValueError("nnodes and nproc_per_node must be >= 1, gpus_per_node >= 0")


def _labels(spec: TrainPodSpec) -> dict[str, str]:
    return {
        "app.kubernetes.io/part-of": "mcrave",
        "app.kubernetes.io/component": "training",
        **spec.labels,
    }


def _threads(spec: TrainPodSpec) -> int:
    """CPU threads per process: the pod's CPU request shared by its ranks (at least 1)."""
    cpus = float(spec.cpu[:-1]) / 1000 if spec.cpu.endswith("m") else float(spec.cpu)
    return max(1, int(cpus) // spec.nproc_per_node)


def _container(spec: TrainPodSpec, name: str, env: list[dict]) -> dict:
    resources: dict[str, dict[str, str]] = {
        "requests": {"cpu": spec.cpu, "memory": spec.memory},
        "limits": {"memory": spec.memory},
    }
    if spec.gpus_per_node:
        for part in resources.values():
            part["nvidia.com/gpu"] = str(spec.gpus_per_node)
    mounts = [{"name": "dshm", "mountPath": "/dev/shm"}]
    mounts += [{"name": claim, "mountPath": path} for claim, path in sorted(spec.volumes.items())]
    return {
        "name": name,
        "image": spec.image,
        "command": ["torchrun", "-m", "mcrave.cli.main"],
        "args": list(spec.train_args),
        "env": [
            {"name": "PET_NPROC_PER_NODE", "value": str(spec.nproc_per_node)},
            {"name": "OMP_NUM_THREADS", "value": str(_threads(spec))},
            *env,
        ],
        "ports": [
            {"name": "pytorchjob-port", "containerPort": PYTORCHJOB_PORT},
            {"name": "metrics", "containerPort": METRICS_PORT},
        ],
        "resources": resources,
        "volumeMounts": mounts,
    }


def _pod_template(spec: TrainPodSpec, container: dict, restart: str, **extra: object) -> dict:
    volumes: list[dict] = [{"name": "dshm", "emptyDir": {"medium": "Memory"}}]
    volumes += [
        {"name": claim, "persistentVolumeClaim": {"claimName": claim}}
        for claim in sorted(spec.volumes)
    ]
    return {
        "metadata": {
            "labels": _labels(spec),
            "annotations": {
                "sidecar.istio.io/inject": "false",  # a sidecar would keep the job alive
                "prometheus.io/scrape": "true",
                "prometheus.io/port": str(METRICS_PORT),
            },
        },
        "spec": {
            "restartPolicy": restart,
            "terminationGracePeriodSeconds": spec.grace_seconds,
            "containers": [container],
            "volumes": volumes,
            **extra,
        },
    }


def pytorch_job(spec: TrainPodSpec) -> dict:
    """A kubeflow.org/v1 PyTorchJob: the operator sets PET_NNODES/NODE_RANK/MASTER_* itself."""
    replicas = {
        "Master": {
            "replicas": 1,
            "restartPolicy": "OnFailure",
            "template": _pod_template(spec, _container(spec, "pytorch", []), "OnFailure"),
        }
    }
    if spec.nnodes > 1:
        replicas["Worker"] = {
            "replicas": spec.nnodes - 1,
            "restartPolicy": "OnFailure",
            "template": _pod_template(spec, _container(spec, "pytorch", []), "OnFailure"),
        }
    return {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "metadata": {"name": spec.name, "labels": _labels(spec)},
        "spec": {
            "nprocPerNode": str(spec.nproc_per_node),
            "runPolicy": {"cleanPodPolicy": "None", "backoffLimit": 3, "suspend": False},
            "pytorchReplicaSpecs": replicas,
        },
    }


def indexed_job(spec: TrainPodSpec) -> dict:
    """A batch/v1 Indexed Job: rank from the completion index, rank 0 at <job>-0.<service>."""
    env = [
        {"name": "PET_NNODES", "value": str(spec.nnodes)},
        {"name": "PET_NODE_RANK", "valueFrom": {"fieldRef": {"fieldPath": COMPLETION_INDEX}}},
        {"name": "PET_MASTER_ADDR", "value": f"{spec.name}-0.{spec.name}"},
        {"name": "PET_MASTER_PORT", "value": str(PYTORCHJOB_PORT)},
    ]
    template = _pod_template(
        spec, _container(spec, "pytorch", env), "OnFailure", subdomain=spec.name
    )
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": spec.name, "labels": _labels(spec)},
        "spec": {
            "completionMode": "Indexed",
            "completions": spec.nnodes,
            "parallelism": spec.nnodes,
            "backoffLimit": 3 * spec.nnodes,
            "suspend": False,
            "template": template,
        },
    }


def headless_service(spec: TrainPodSpec) -> dict:
    """DNS for the Indexed Job's pods; not-ready addresses published so workers find rank 0 early."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": spec.name, "labels": _labels(spec)},
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": {"batch.kubernetes.io/job-name": spec.name},
            "ports": [{"name": "rendezvous", "port": PYTORCHJOB_PORT}],
        },
    }


def example_spec() -> TrainPodSpec:
    """The job the rendered examples in deploy/k8s/training show: 2 nodes x 1 GPU."""
    return TrainPodSpec(
        name="mcrave-train-example",
        image="mcrave:0.1.0-cuda",
        train_args=[
            "train",
            "/data/example",
            "--config",
            "v2",
            "-o",
            "/runs/example",
            "--resume",
            "--metrics-port",
            str(METRICS_PORT),
        ],
        nnodes=2,
        gpus_per_node=1,
        volumes={"mcrave-data": "/data", "mcrave-runs": "/runs"},
    )


def write_examples(out: Path) -> list[Path]:
    """Render the example job in both forms as YAML files (what deploy/k8s/training holds)."""
    import yaml

    spec = example_spec()
    header = (
        "# Generated by `python -m services.trainer.k8s_manifests --write deploy/k8s/training`.\n"
    )
    files = {
        "pytorchjob.yaml": [pytorch_job(spec)],
        "indexed-job.yaml": [headless_service(spec), indexed_job(spec)],
    }
    written = []
    for name, docs in files.items():
        path = out / name
        path.write_text(header + yaml.safe_dump_all(docs, sort_keys=False))
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", type=Path, required=True, help="folder for the example YAMLs")
    args = parser.parse_args(argv)
    for path in write_examples(args.write):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
