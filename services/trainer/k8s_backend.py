"""Run jobs on Kubernetes with the official `kubernetes` client: a Kubeflow PyTorchJob when the
training operator serves `kubeflow.org/v1 pytorchjobs`, else an Indexed Job + headless Service
(objects from `k8s_manifests`).

Cancel is graceful: the job is suspended (`spec.suspend` / `spec.runPolicy.suspend`), so its pods
get SIGTERM and `terminationGracePeriodSeconds` to write a checkpoint; once no pod is left the
objects are deleted. Progress does not come from the API: rank 0 writes `progress.jsonl` into the
run folder on the shared runs volume, which the trainer mounts at the same path.
"""

from __future__ import annotations

import logging
from typing import Any

from services.trainer.backend import RunStatus
from services.trainer.k8s_manifests import (
    METRICS_PORT,
    TrainPodSpec,
    headless_service,
    indexed_job,
    pytorch_job,
)
from services.trainer.store import JobRecord

log = logging.getLogger(__name__)
KUBEFLOW = ("kubeflow.org", "v1", "pytorchjobs")
JOB_LABEL = "mcrave.io/job"


def parse_volumes(text: str) -> dict[str, str]:
    """`claim=/mount,claim2=/mount2` -> {claim: mount}."""
    out = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        claim, sep, mount = item.partition("=")
        if not sep or not claim or not mount.startswith("/"):
            raise ValueError(f"volume {item!r}: expected PVC_NAME=/mount/path")
        out[claim] = mount
    return out


class KubernetesBackend:
    name = "kubernetes"
    metrics_port = METRICS_PORT  # pods have their own network: a fixed port, scraped per pod

    def __init__(
        self, api_client: Any, namespace: str, image: str, volumes: dict[str, str]
    ) -> None:
        from kubernetes import client

        self.namespace, self.image, self.volumes = namespace, image, volumes
        self.core = client.CoreV1Api(api_client)
        self.batch = client.BatchV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self._models = client
        self._kubeflow: bool | None = None

    @classmethod
    def from_environment(cls, namespace: str, image: str, volumes: str) -> KubernetesBackend:
        """In a pod: the service account; elsewhere: ~/.kube/config."""
        try:
            from kubernetes import client, config
        except ImportError as exc:
            raise ValueError("--backend kubernetes needs `pip install kubernetes`") from exc
        try:
            config.load_incluster_config()
        except config.ConfigException:
            config.load_kube_config()
        return cls(client.ApiClient(), namespace, image, parse_volumes(volumes))

    def kubeflow_present(self) -> bool:
        """Whether the API serves PyTorchJobs (asked once; the operator rarely comes and goes)."""
        if self._kubeflow is None:
            from kubernetes.client.exceptions import ApiException

            group, version, plural = KUBEFLOW
            try:
                resources = self.custom.get_api_resources(group, version)
                self._kubeflow = any(r.name == plural for r in resources.resources)
            except ApiException as exc:
                if exc.status != 404:
                    raise
                self._kubeflow = False
        return self._kubeflow

    def pod_spec(self, record: JobRecord, train_args: list[str]) -> TrainPodSpec:
        res = record.spec.get("resources", {})
        return TrainPodSpec(
            name=f"mcrave-{record.id}-{record.attempt}",
            image=self.image,
            train_args=train_args,
            nnodes=int(res.get("nnodes") or 1),
            nproc_per_node=int(res.get("nproc_per_node") or 1),
            gpus_per_node=int(res.get("gpus_per_node") or 0),
            cpu=res.get("cpu") or "2",
            memory=res.get("memory") or "4Gi",
            volumes=self.volumes,
            labels={JOB_LABEL: record.id},
        )

    def start(self, record: JobRecord, train_args: list[str]) -> dict:
        spec = self.pod_spec(record, train_args)
        if self.kubeflow_present():
            group, version, plural = KUBEFLOW
            self.custom.create_namespaced_custom_object(
                group, version, self.namespace, plural, pytorch_job(spec)
            )
            return {"kind": "PyTorchJob", "name": spec.name}
        svc = self._models.V1Service.from_dict(headless_service(spec))
        self.core.create_namespaced_service(self.namespace, svc)
        job = self._models.V1Job.from_dict(indexed_job(spec))
        try:
            self.batch.create_namespaced_job(self.namespace, job)
        except Exception:
            self.core.delete_namespaced_service(spec.name, self.namespace)  # leave nothing behind
            raise
        return {"kind": "Job", "name": spec.name}

    def _get(self, record: JobRecord) -> dict | None:
        from kubernetes.client.exceptions import ApiException

        name = record.handle["name"]
        try:
            if record.handle["kind"] == "PyTorchJob":
                group, version, plural = KUBEFLOW
                return self.custom.get_namespaced_custom_object(
                    group, version, self.namespace, plural, name
                )
            job = self.batch.read_namespaced_job(name, self.namespace)
            return self.core.api_client.sanitize_for_serialization(job)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def status(self, record: JobRecord) -> RunStatus:
        obj = self._get(record)
        if obj is None:
            return RunStatus(
                False, None, f"{record.handle['kind']} {record.handle['name']} is gone"
            )
        status = obj.get("status") or {}
        conditions = {
            c["type"]: c for c in status.get("conditions") or [] if c.get("status") == "True"
        }
        if "Complete" in conditions or "Succeeded" in conditions:
            return RunStatus(False, 0)
        if "Failed" in conditions:
            why = conditions["Failed"].get("message") or conditions["Failed"].get("reason", "")
            return RunStatus(False, 1, "; ".join(filter(None, [why, self._pod_problems(record)])))
        if "Suspended" in conditions and not self._pods(record):
            return RunStatus(False, None, "suspended and all pods gone")
        return RunStatus(True)

    def _pods(self, record: JobRecord) -> list:
        pods = self.core.list_namespaced_pod(
            self.namespace, label_selector=f"{JOB_LABEL}={record.id}"
        )
        return list(pods.items)

    def _pod_problems(self, record: JobRecord) -> str:
        """Why containers ended or wait (OOMKilled, ImagePullBackOff...), for the job message."""
        seen = []
        for pod in self._pods(record):
            for cs in (pod.status.container_statuses if pod.status else None) or []:
                state = cs.state
                detail = (state.terminated or state.waiting) if state else None
                if detail is not None and detail.reason not in (None, "Completed"):
                    seen.append(f"{pod.metadata.name}: {detail.reason}")
        return ", ".join(seen)

    def log_tail(self, record: JobRecord, lines: int) -> list[str]:
        """The last lines of the first pod's log (rank 0 sorts first); [] while there is none."""
        from kubernetes.client.exceptions import ApiException

        try:
            pods = sorted(p.metadata.name for p in self._pods(record))
            if not pods:
                return []
            text = self.core.read_namespaced_pod_log(pods[0], self.namespace, tail_lines=lines)
        except ApiException:
            return []  # pod gone or not started: the log is simply not there (yet)
        return text.splitlines()[-lines:]

    def stop(self, record: JobRecord) -> None:
        name = record.handle["name"]
        if record.handle["kind"] == "PyTorchJob":
            group, version, plural = KUBEFLOW
            patch = {"spec": {"runPolicy": {"suspend": True}}}
            self.custom.patch_namespaced_custom_object(
                group, version, self.namespace, plural, name, patch
            )
        else:
            self.batch.patch_namespaced_job(name, self.namespace, {"spec": {"suspend": True}})

    def kill(self, record: JobRecord) -> None:
        self._delete(record, grace_seconds=0)

    def cleanup(self, record: JobRecord) -> None:
        self._delete(record, grace_seconds=None)

    def _delete(self, record: JobRecord, grace_seconds: int | None) -> None:
        from kubernetes.client.exceptions import ApiException

        name = record.handle.get("name")
        if not name:
            return
        calls = []
        if record.handle["kind"] == "PyTorchJob":
            group, version, plural = KUBEFLOW
            calls.append(
                lambda: self.custom.delete_namespaced_custom_object(
                    group,
                    version,
                    self.namespace,
                    plural,
                    name,
                    grace_period_seconds=grace_seconds,
                    propagation_policy="Background",
                )  # fmt: skip
            )
        else:
            calls.append(
                lambda: self.batch.delete_namespaced_job(
                    name,
                    self.namespace,
                    grace_period_seconds=grace_seconds,
                    propagation_policy="Background",
                )  # fmt: skip
            )
            calls.append(lambda: self.core.delete_namespaced_service(name, self.namespace))
        for call in calls:
            try:
                call()
            except ApiException as exc:
                if exc.status != 404:
                    raise
