"""TrainerService over gRPC: a thin adapter from protobuf to the job manager and the registry."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

from google.protobuf.json_format import MessageToDict, ParseDict
from mcrave_client.proto import trainer_pb2, trainer_pb2_grpc

from mcrave.registry import RegistryError, read_manifest
from services.common.errors import FailedPrecondition, NotFound
from services.trainer.jobs import JobManager
from services.trainer.publish import (
    iter_files,
    publish_checkpoint,
    published_versions,
    require_model_name,
    version_dir,
)
from services.trainer.store import JobRecord

FULL_NAME = trainer_pb2.DESCRIPTOR.services_by_name["TrainerService"].full_name


def job_message(record: JobRecord) -> trainer_pb2.Job:
    spec = ParseDict(record.spec, trainer_pb2.JobSpec(), ignore_unknown_fields=True)
    return trainer_pb2.Job(
        id=record.id,
        spec=spec,
        state=trainer_pb2.JobState.Value(record.state),
        step=record.step,
        max_steps=record.max_steps,
        losses=record.losses,
        x_realtime=record.x_realtime,
        eta_seconds=record.eta_seconds,
        checkpoint_step=record.checkpoint_step,
        message=record.message,
        created=record.created,
        updated=record.updated,
        backend=record.backend,
        published=record.published,
        resumable=record.state in ("FAILED", "CANCELLED", "INTERRUPTED")
        and record.last_checkpoint.exists(),
    )


class TrainerServicer(trainer_pb2_grpc.TrainerServiceServicer):
    def __init__(self, manager: JobManager, models: Path) -> None:
        self.manager = manager
        self.models = models

    async def SubmitJob(self, request, context):  # noqa: N802 - gRPC method names
        spec = MessageToDict(request.spec, preserving_proto_field_name=True)
        return job_message(await self.manager.submit(spec, request.job_id))

    async def GetJob(self, request, context):  # noqa: N802
        return job_message(self.manager.get(request.job_id))

    async def ListJobs(self, request, context):  # noqa: N802
        states = tuple(trainer_pb2.JobState.Name(s) for s in request.states)
        records = self.manager.store.list(states, request.limit or 100)
        return trainer_pb2.ListJobsResponse(jobs=[job_message(r) for r in records])

    async def WatchJob(self, request, context) -> AsyncIterator[trainer_pb2.JobEvent]:  # noqa: N802
        async for kind, record in self.manager.watch(request.job_id):
            lines = await self.manager.log_tail(record, request.log_lines)
            yield trainer_pb2.JobEvent(kind=kind, job=job_message(record), log_tail=lines)

    async def CancelJob(self, request, context):  # noqa: N802
        return job_message(await self.manager.cancel(request.job_id))

    async def ResumeJob(self, request, context):  # noqa: N802
        return job_message(await self.manager.resume(request.job_id))

    async def PublishModel(self, request, context):  # noqa: N802
        record = self.manager.get(request.job_id)
        source = Path(record.run_dir) / ("best.ckpt" if request.best else "last.ckpt")
        if not source.exists():
            which = "validated (best)" if request.best else ""
            raise FailedPrecondition(
                f"job {record.id} has no {which} checkpoint yet", "no-checkpoint"
            )
        name = request.name or record.spec.get("model_name") or record.id
        require_model_name(name)
        loop = asyncio.get_running_loop()
        version, step = await loop.run_in_executor(
            None,
            publish_checkpoint,
            self.models,
            name,
            source,
            Path(record.run_dir),
            request.torchscript,
            record.id,
        )
        self.manager.mark_published(record, name, version)
        return trainer_pb2.PublishModelResponse(name=name, version=version, step=step)

    async def ListVersions(self, request, context):  # noqa: N802
        found = published_versions(self.models, request.name)
        return trainer_pb2.ListVersionsResponse(
            versions=[trainer_pb2.ModelVersion(name=n, version=v, sha256=s) for n, v, s in found]
        )

    async def FetchModel(self, request, context) -> AsyncIterator[trainer_pb2.FileChunk]:  # noqa: N802
        try:
            path = version_dir(self.models, request.name, request.version)
            chunks = iter_files(path)
            first = next(chunks)  # verifies the manifest's digests before anything is sent
        except RegistryError as exc:
            raise NotFound(str(exc), "unknown-version") from exc
        sha = read_manifest(path, verify=False).get("sha256", {})
        version = trainer_pb2.ModelVersion(name=request.name, version=int(path.name), sha256=sha)
        fname, size, data = first
        yield trainer_pb2.FileChunk(version=version, file=fname, size=size, data=data)
        for fname, size, data in chunks:
            yield trainer_pb2.FileChunk(file=fname or "", size=size, data=data)
