"""deploy/: kustomize overlays render and validate strictly, training manifests match their schema
and the builder, compose files resolve, and the Dockerfile copies only paths that exist."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from deploy_helpers import (
    DEPLOY,
    K8S,
    REPO,
    Services,
    kustomize,
    object_problems,
    require_pytorchjob_schema,
    require_tool,
)

from services.encoder.relay import pattern_regex
from services.trainer import k8s_manifests as km

OVERLAYS = sorted(p.name for p in (K8S / "overlays").iterdir() if p.is_dir())
CRD_KINDS = {"ServiceMonitor", "PyTorchJob"}


def validate_core(obj: dict) -> None:
    problem = object_problems(obj)
    assert problem is None, problem


def validate_pytorchjob(obj: dict) -> None:
    require_pytorchjob_schema()
    validate_core(obj)


@pytest.mark.parametrize("overlay", ["base", *OVERLAYS])
def test_kustomize_renders_and_core_kinds_validate_strictly(overlay):
    path = K8S / "base" if overlay == "base" else K8S / "overlays" / overlay
    objs = kustomize(path)
    kinds = {o["kind"] for o in objs}
    assert {"Deployment", "Service", "ConfigMap", "PersistentVolumeClaim", "Role"} <= kinds
    for obj in objs:
        if obj["kind"] not in CRD_KINDS:
            validate_core(obj)
    ns = {o["metadata"].get("namespace") for o in objs if o["kind"] != "Namespace"}
    assert len(ns) == 1, f"objects spread over namespaces {ns}"


def _workloads(objs: list[dict]) -> dict[str, dict]:
    """Deployments and StatefulSets by name."""
    return {o["metadata"]["name"]: o for o in objs if o["kind"] in ("Deployment", "StatefulSet")}


@pytest.mark.parametrize("overlay", ["base", *OVERLAYS])
def test_probes_work_with_mtls(overlay):
    """Trainer: native gRPC probes on its plaintext health-only port. Encoder/decoder: an exec
    probe (probe.yaml) running grpc.health.v1 Check on the gRPC port with the pod's own cert."""
    path = K8S / "base" if overlay == "base" else K8S / "overlays" / overlay
    objs = kustomize(path)
    assert any(o["kind"] == "ConfigMap" and o["metadata"]["name"] == "mcrave-probe" for o in objs)
    for name, dep in _workloads(objs).items():
        (container,) = dep["spec"]["template"]["spec"]["containers"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        args = container["args"]
        assert f"--port={ports['grpc']}" in args, name
        for probe in ("readinessProbe", "livenessProbe"):
            spec = container[probe]
            if name == "mcrave-trainer":
                assert f"--health-port={ports['health']}" in args
                assert spec["grpc"]["port"] == ports["health"] != ports["grpc"]
            else:
                command = spec["exec"]["command"]
                assert command[:3] == ["python", "/probe/health.py", f"localhost:{ports['grpc']}"]
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert name == "mcrave-trainer" or "/probe" in mounts
        volumes = {v["name"] for v in dep["spec"]["template"]["spec"]["volumes"]}
        assert "/models" in mounts and {m["name"] for m in container["volumeMounts"]} <= volumes
        tls = [a for a in args if a.startswith("--tls-")]
        assert len(tls) == (0 if overlay == "dev" else 3), (name, tls)


def test_exec_probe_script_checks_live_grpc_health_with_and_without_mtls(tmp_path):
    """The probe.yaml script against a real server's health service (the trainer's, quick to
    start), plaintext and with mTLS required: SERVING -> exit 0; unknown service, or no client
    certificate for an mTLS server -> non-zero."""
    import shutil

    from sdk_helpers import make_pki

    (probe,) = [o for o in yaml.safe_load_all((K8S / "base" / "probe.yaml").read_text())]
    script = tmp_path / "health.py"
    script.write_text(probe["data"]["health.py"])
    pki, tls = make_pki(tmp_path), tmp_path / "tls"
    tls.mkdir()
    for src, dst in (("ca_cert", "ca.crt"), ("server_cert", "tls.crt"), ("server_key", "tls.key")):
        shutil.copy(pki[src], tls / dst)
    (tmp_path / "models").mkdir()
    (tmp_path / "data").mkdir()
    mtls = ["--tls-cert", str(tls / "tls.crt"), "--tls-key", str(tls / "tls.key")]
    mtls += ["--tls-ca", str(tls / "ca.crt")]

    def probe_exit(target: str, service: str, tls_dir: Path) -> int:
        env = {**os.environ, "MCRAVE_PROBE_TLS": str(tls_dir)}
        cmd = [sys.executable, str(script), target, service]
        return subprocess.run(cmd, capture_output=True, timeout=30, env=env).returncode

    with Services(tmp_path) as svc:
        plain = f"localhost:{svc.trainer(tmp_path / 'data', tmp_path / 'models')['port']}"
        assert probe_exit(plain, "mcrave.v1.TrainerService", tmp_path / "none") == 0
        assert probe_exit(plain, "", tmp_path / "none") == 0
        assert probe_exit(plain, "nope", tmp_path / "none") != 0
        svc.stop("trainer")
        secure = svc.trainer(tmp_path / "data", tmp_path / "models", *mtls)["port"]
        assert probe_exit(f"localhost:{secure}", "mcrave.v1.TrainerService", tls) == 0
        assert probe_exit(f"localhost:{secure}", "", tmp_path / "none") != 0


def test_serving_services_are_headless_and_roll_without_unavailability():
    objs = kustomize(K8S / "base")
    services = {o["metadata"]["name"]: o for o in objs if o["kind"] == "Service"}
    for name in ("mcrave-encoder", "mcrave-decoder"):
        assert services[name]["spec"]["clusterIP"] == "None"
        assert {p["name"] for p in services[name]["spec"]["ports"]} == {"grpc", "metrics"}
    workloads = _workloads(objs)
    assert workloads["mcrave-encoder"]["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    # the decoder is a StatefulSet (per-pod DNS names for relays): it cannot surge, so it rolls
    # one pod at a time with more than one replica, and its disruption budget keeps one serving
    decoder = workloads["mcrave-decoder"]["spec"]
    assert decoder["updateStrategy"]["type"] == "RollingUpdate" and decoder["replicas"] >= 2
    budgets = {o["metadata"]["name"]: o for o in objs if o["kind"] == "PodDisruptionBudget"}
    assert budgets["mcrave-decoder"]["spec"]["minAvailable"] >= 1


def _expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion of container args (unknown names stay as they are)."""
    return re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), text)


def _field_env(container: dict) -> dict[str, str]:
    return {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in container.get("env", [])}


@pytest.mark.parametrize("overlay", ["base", *OVERLAYS])
def test_relays_reach_the_decoder_pod_that_holds_the_stream(overlay):
    """Behind the balanced Service a relayed stream's reader sits on one decoder pod: that pod
    advertises its own DNS name (a StatefulSet pod under its headless Service: a Deployment's pods
    have no hostname, so no such record), and the encoders' --relay-to pattern admits exactly
    such names."""
    objs = kustomize(K8S / "base" if overlay == "base" else K8S / "overlays" / overlay)
    deps = _workloads(objs)
    services = {o["metadata"]["name"]: o for o in objs if o["kind"] == "Service"}
    ns = deps["mcrave-decoder"]["metadata"]["namespace"]
    assert deps["mcrave-decoder"]["kind"] == "StatefulSet"
    governing = deps["mcrave-decoder"]["spec"]["serviceName"]
    assert services[governing]["spec"]["clusterIP"] == "None"
    pod = deps["mcrave-decoder"]["spec"]["template"]["spec"]
    (decoder,) = pod["containers"]
    assert _field_env(decoder) == {
        "POD_NAME": "metadata.name",
        "POD_NAMESPACE": "metadata.namespace",
    }
    env = {"POD_NAME": "mcrave-decoder-1", "POD_NAMESPACE": ns}
    (advertised,) = [a.split("=", 1)[1] for a in decoder["args"] if a.startswith("--advertise=")]
    advertised = _expand(advertised, env)
    assert advertised == f"{env['POD_NAME']}.{governing}.{ns}.svc.cluster.local:50052"
    (encoder,) = deps["mcrave-encoder"]["spec"]["template"]["spec"]["containers"]
    assert _field_env(encoder)["POD_NAMESPACE"] == "metadata.namespace"
    args = {
        a.split("=", 1)[0]: _expand(a.split("=", 1)[1], env) for a in encoder["args"] if "=" in a
    }
    admits = pattern_regex(args["--relay-to"]).fullmatch  # what the encoder matches with
    assert admits(advertised)
    assert not admits(f"evil.example.{ns}.svc.cluster.local:50052")
    if "--tls-ca" in args:  # mTLS overlays relay over mTLS too, checking the Service's name
        assert args["--relay-tls-ca"] == args["--tls-ca"]
        assert args["--relay-tls-server-name"] == f"mcrave-decoder.{ns}.svc.cluster.local"


def test_trainer_rbac_covers_what_the_kubernetes_backend_calls():
    objs = kustomize(K8S / "base")
    (role,) = [o for o in objs if o["kind"] == "Role"]
    allowed = {
        (group, res, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for res in rule["resources"]
        for verb in rule["verbs"]
    }
    needed = [("batch", "jobs", v) for v in ("create", "get", "list", "watch", "patch", "delete")]
    needed += [("kubeflow.org", "pytorchjobs", v) for v in ("create", "get", "patch", "delete")]
    needed += [("", "services", "create"), ("", "services", "delete"), ("", "pods", "list")]
    needed += [("", "pods/log", "get")]
    assert not [n for n in needed if n not in allowed]
    trainer = _workloads(objs)["mcrave-trainer"]["spec"]["template"]["spec"]
    assert trainer["serviceAccountName"] == "mcrave-trainer"


def test_gpu_overlay_requests_gpus_and_adds_servicemonitor():
    objs = kustomize(K8S / "overlays" / "gpu")
    for name in ("mcrave-encoder", "mcrave-decoder"):
        (c,) = _workloads(objs)[name]["spec"]["template"]["spec"]["containers"]
        assert c["resources"]["limits"]["nvidia.com/gpu"] == "1"
        assert c["image"].endswith("-cuda")
    (monitor,) = [o for o in objs if o["kind"] == "ServiceMonitor"]
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"


def _spec(**kw) -> km.TrainPodSpec:
    base = dict(name="job-1", image="mcrave:test", train_args=["train", "/data/d"])
    return km.TrainPodSpec(**{**base, **kw})


@pytest.mark.parametrize("nnodes", [1, 3])
def test_built_training_objects_validate(nnodes):
    spec = _spec(nnodes=nnodes, gpus_per_node=1, volumes={"mcrave-runs": "/runs"})
    validate_pytorchjob(km.pytorch_job(spec))
    job, svc = km.indexed_job(spec), km.headless_service(spec)
    validate_core(job)
    validate_core(svc)
    env = {e["name"]: e for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["PET_NNODES"]["value"] == str(nnodes)
    assert env["PET_NODE_RANK"]["valueFrom"]["fieldRef"]["fieldPath"] == km.COMPLETION_INDEX
    assert env["PET_MASTER_ADDR"]["value"] == "job-1-0.job-1"
    assert job["spec"]["template"]["spec"]["subdomain"] == svc["metadata"]["name"]
    assert svc["spec"]["publishNotReadyAddresses"] is True
    assert job["spec"]["completionMode"] == "Indexed" and job["spec"]["completions"] == nnodes


def test_strict_validation_catches_a_misspelled_field():
    require_pytorchjob_schema()
    job = km.pytorch_job(_spec())
    job["spec"]["runPolicy"]["cleanPodPolicyy"] = "None"
    assert "cleanPodPolicyy" in object_problems(job)
    job = km.pytorch_job(_spec())
    job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["restartPolicyy"] = "Never"
    assert "restartPolicyy" in object_problems(job)
    job = km.indexed_job(_spec())
    job["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    assert "imagePullPolicyy" in object_problems(job)


def test_bad_job_names_are_refused():
    for name in ("Job_1", "x" * 60, "-a", ""):
        with pytest.raises(ValueError, match="DNS label"):
            _spec(name=name)


def test_rendered_training_examples_are_current_and_valid(tmp_path):
    written = km.write_examples(tmp_path)
    for path in written:
        committed = K8S / "training" / path.name
        assert committed.read_text() == path.read_text(), (
            f"{committed} is stale: python -m services.trainer.k8s_manifests --write {committed.parent}"
        )
        for obj in yaml.safe_load_all(committed.read_text()):
            validate_pytorchjob(obj) if obj["kind"] == "PyTorchJob" else validate_core(obj)


@pytest.mark.parametrize(
    "files", [["docker-compose.yml"], ["docker-compose.yml", "docker-compose.pull.yml"]]
)
def test_compose_files_resolve(files):
    compose = require_tool("docker-compose")
    args = [compose, *(a for f in files for a in ("-f", str(DEPLOY / f))), "config", "-q"]
    env = {**os.environ, "MCRAVE_TRAINER": "machine-a:50053"}
    proc = subprocess.run(args, capture_output=True, text=True, env=env, cwd=DEPLOY)
    assert proc.returncode == 0, proc.stderr
    if len(files) == 2:  # without the trainer address the pull override refuses clearly
        env.pop("MCRAVE_TRAINER")
        proc = subprocess.run(args, capture_output=True, text=True, env=env, cwd=DEPLOY)
        assert proc.returncode != 0 and "MCRAVE_TRAINER" in proc.stderr


def test_compose_mounts_files_that_exist():
    spec = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    for name, svc in spec["services"].items():
        for vol in svc.get("volumes", []):
            src = vol.split(":")[0]
            if src.startswith("./") and "$" not in src:
                assert (DEPLOY / src).exists(), f"{name} mounts missing {src}"
        build = svc.get("build")
        if build:
            assert (DEPLOY / build["context"] / build["dockerfile"]).is_file()


def test_dockerfile_copies_tracked_paths_and_has_a_device_arg():
    text = (DEPLOY / "docker" / "Dockerfile").read_text()
    sources = [
        src
        for line in re.findall(r"^COPY\s+(.+)$", text, re.MULTILINE)
        for src in line.split()[:-1]
        if not src.startswith("--")
    ]
    assert sources
    assert not [s for s in sources if not (REPO / s).exists()]
    assert re.search(r"^ARG DEVICE=cpu$", text, re.MULTILINE) and "cuda)" in text
