"""`mcrave serve trainer --jobs-dir DIR --data-root DIR --models DIR ...` (reached through
`mcrave serve`, which hands the trainer its own options)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

from services.common.auth import ConfigError
from services.common.options import add_endpoint_options, endpoint_options
from services.trainer.jobs import JobLimits


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mcrave serve trainer", description="run the training-job gRPC service"
    )
    p.add_argument("--jobs-dir", type=Path, required=True, help="job records (local disk: SQLite)")
    p.add_argument("--data-root", type=Path, required=True, help="datasets jobs may train on")
    p.add_argument("--models", type=Path, required=True, help="model registry to publish into")
    p.add_argument("--runs-dir", type=Path, help="run folders (default JOBS_DIR/runs)")
    p.add_argument("--backend", default="local", choices=("local", "kubernetes"))
    add_endpoint_options(p, port=50053, metrics_port=9453, ports_help="default 50053, metrics 9453")
    p.add_argument("--health-port", type=int, help="plaintext grpc.health.v1-only port (probes)")
    p.add_argument("--threads", type=int, help="torch threads per local job")
    p.add_argument("--cancel-grace", type=float, default=120.0, help="seconds to checkpoint")
    p.add_argument("--max-active", type=int, default=4, help="jobs running at once (default 4)")
    limits = p.add_argument_group("what one job may ask for (more: INVALID_ARGUMENT)")
    d = JobLimits()
    limits.add_argument("--job-max-nodes", type=int, default=d.max_nodes, help="nnodes")
    limits.add_argument(
        "--job-max-procs", type=int, default=d.max_procs_per_node, help="nproc_per_node"
    )
    limits.add_argument("--job-max-gpus", type=int, default=d.max_gpus_per_node, help="per node")
    limits.add_argument("--job-max-cpu", type=float, default=d.max_cpu, help="cores per node")
    limits.add_argument(
        "--job-max-memory-gib", type=float, default=d.max_memory_gib, help="GiB per node"
    )
    p.add_argument("--sd-file", type=Path, help="write running jobs' metrics targets (file_sd)")
    p.add_argument("--sd-host", default="127.0.0.1", help="host Prometheus reaches jobs on")
    p.add_argument(
        "--insecure",
        action="store_true",
        help="listen off loopback without a token or mTLS (anyone reaching it can start jobs)",
    )
    p.add_argument("--ready-file", type=Path, help="write the bound ports here as JSON")
    k8s = p.add_argument_group("kubernetes backend (defaults from the ConfigMap's environment)")
    k8s.add_argument("--k8s-namespace", default=os.environ.get("MCRAVE_NAMESPACE", "mcrave"))
    k8s.add_argument("--k8s-image", default=os.environ.get("MCRAVE_TRAIN_IMAGE", "mcrave:0.1.0"))
    k8s.add_argument(
        "--k8s-volumes",
        default=os.environ.get("MCRAVE_TRAIN_PVCS", ""),
        help="PVC=/mount,... mounted into training pods (same paths as in the trainer)",
    )
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv[2:])  # argv: ["serve", "trainer", ...]
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    from services.trainer.server import TrainerConfig, serve

    try:
        extra = {}
        if args.backend == "kubernetes":
            from services.trainer.k8s_backend import KubernetesBackend

            extra["kubernetes"] = KubernetesBackend.from_environment(
                args.k8s_namespace, args.k8s_image, args.k8s_volumes
            )
        cfg = TrainerConfig(
            **endpoint_options(args),
            jobs_dir=args.jobs_dir,
            data_root=args.data_root,
            models=args.models,
            runs_dir=args.runs_dir,
            backend=args.backend,
            health_port=args.health_port,
            sd_file=args.sd_file,
            sd_host=args.sd_host,
            threads=args.threads,
            cancel_grace_s=args.cancel_grace,
            max_active=args.max_active,
            job_limits=JobLimits(
                max_nodes=args.job_max_nodes,
                max_procs_per_node=args.job_max_procs,
                max_gpus_per_node=args.job_max_gpus,
                max_cpu=args.job_max_cpu,
                max_memory_gib=args.job_max_memory_gib,
            ),
            insecure=args.insecure,
            extra_backends=extra,
        )
        asyncio.run(serve(cfg, ready_file=args.ready_file))
    except (ConfigError, ValueError, OSError) as error:
        print(f"mcrave serve trainer: {error}", file=sys.stderr)
        return 2
    return 0
