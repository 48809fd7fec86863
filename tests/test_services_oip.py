"""Open Inference Protocol (KServe v2) on the encoder and decoder, driven by the real tritonclient:
metadata, a clip round trip equal to `mcrave infer` (spatial and latent-only), typed and raw
tensors, clear statuses for bad requests, health and reflection."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
import tritonclient.grpc as tg
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from mcrave_client.proto import grpc_predict_v2_pb2 as pb
from mcrave_client.proto import grpc_predict_v2_pb2_grpc as pb_grpc
from services_helpers import ServerThread, audio, channel, publish_tiny
from tritonclient.grpc import service_pb2 as triton_pb
from tritonclient.utils import InferenceServerException

from mcrave.inference import infer_array
from services.decoder.servicer import SERVICE as DECODER
from services.encoder.servicer import SERVICE as ENCODER

OIP = "inference.GRPCInferenceService"


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    root = tmp_path_factory.mktemp("reg") / "models"
    root.mkdir()
    publish_tiny(root, seed=0)
    enc, dec = ServerThread(ENCODER, root), ServerThread(DECODER, root)
    yield enc, dec
    enc.stop()
    dec.stop()


def engine_of(server: ServerThread):
    return server.running.runtime.watcher.get("tiny").engine


def tensor(name: str, array: np.ndarray) -> tg.InferInput:
    dtype = "INT32" if array.dtype == np.int32 else "FP32"
    t = tg.InferInput(name, list(array.shape), dtype)
    t.set_data_from_numpy(array)  # raw_input_contents, as tritonclient does by default
    return t


def test_server_and_model_metadata(servers) -> None:
    enc, dec = servers
    for server, service in ((enc, "encoder"), (dec, "decoder")):
        client = tg.InferenceServerClient(server.target)
        assert client.is_server_live() and client.is_server_ready()
        assert client.is_model_ready("tiny") and client.is_model_ready("tiny", "1")
        assert not client.is_model_ready("tiny", "2") and not client.is_model_ready("nope")
        assert client.get_server_metadata().name == f"mcrave-{service}"
        client.close()
    shapes = lambda tensors: [(t.name, t.datatype, list(t.shape)) for t in tensors]  # noqa: E731
    client = tg.InferenceServerClient(enc.target)
    meta = client.get_model_metadata("tiny")
    assert meta.name == "tiny" and list(meta.versions) == ["1"]
    assert shapes(meta.inputs) == [("audio", "FP32", [-1, 2]), ("present", "INT32", [-1])]
    assert shapes(meta.outputs) == [("latents", "FP32", [-1, 8])]
    client.close()
    client = tg.InferenceServerClient(dec.target)
    meta = client.get_model_metadata("tiny", "1")
    assert shapes(meta.inputs) == [
        ("latents", "FP32", [-1, 8]),
        ("audio", "FP32", [-1, 2]),
        ("present", "INT32", [-1]),
    ]
    assert shapes(meta.outputs) == [("audio", "FP32", [-1, 2])]
    client.close()


def test_round_trip_equals_mcrave_infer(servers) -> None:
    enc, dec = servers
    x = audio(11000, seed=4)  # [frames, 2], not a multiple of the ratio
    right, present = x[:, [1]], np.array([1], np.int32)
    encoder, decoder = tg.InferenceServerClient(enc.target), tg.InferenceServerClient(dec.target)
    result = encoder.infer(
        "tiny", [tensor("audio", right), tensor("present", present)], request_id="r1"
    )
    reply = result.get_response()
    assert (reply.model_name, reply.model_version, reply.id) == ("tiny", "1", "r1")
    latency = reply.parameters["latency"].int64_param
    assert latency == engine_of(enc).latency
    z = result.as_numpy("latents")
    assert z.dtype == np.float32 and z.shape[1] == 8
    # spatial: the right channel's audio travels to the decoder beside the latents
    y = decoder.infer(
        "tiny", [tensor("latents", z), tensor("audio", right), tensor("present", present)]
    ).as_numpy("audio")
    assert y.shape == (len(z) * engine_of(dec).ratio, 2)
    want = infer_array(engine_of(enc), right.T, present=[1])
    np.testing.assert_allclose(y[latency : latency + len(x)].T, want, atol=1e-4)
    # latent-only: the latents alone
    y = decoder.infer("tiny", [tensor("latents", z)], model_version="1").as_numpy("audio")
    want_latent = infer_array(engine_of(enc), right.T, present=[1], latent_only=True)
    np.testing.assert_allclose(y[latency : latency + len(x)].T, want_latent, atol=1e-4)
    assert np.abs(want - want_latent).max() > 1e-2  # the audio really steered the output
    encoder.close()
    decoder.close()


def test_typed_contents_equal_raw(servers) -> None:
    enc, _ = servers
    x = audio(3000, seed=6)
    request = pb.ModelInferRequest(model_name="tiny")
    request.inputs.add(name="audio", datatype="FP32", shape=x.shape).contents.fp32_contents[:] = (
        x.ravel().tolist()
    )
    request.inputs.add(name="present", datatype="INT32", shape=[2]).contents.int_contents[:] = [
        0,
        1,
    ]
    with channel(enc.target) as ch:
        typed = pb_grpc.GRPCInferenceServiceStub(ch).ModelInfer(request)
    raw = tg.InferenceServerClient(enc.target).infer("tiny", [tensor("audio", x)])
    assert [(o.name, list(o.shape)) for o in typed.outputs] == [
        ("latents", list(raw.as_numpy("latents").shape))
    ]
    assert typed.raw_output_contents[0] == raw.get_response().raw_output_contents[0]


def _request(model: str = "tiny", version: str = "", **tensors) -> pb.ModelInferRequest:
    """A raw-contents request; each tensor is (datatype, shape, bytes)."""
    request = pb.ModelInferRequest(model_name=model, model_version=version)
    for name, (datatype, shape, data) in tensors.items():
        request.inputs.add(name=name, datatype=datatype, shape=shape)
        request.raw_input_contents.append(data)
    return request


def _f32(frames: int, width: int, value: float = 0.1) -> tuple[str, list[int], bytes]:
    return "FP32", [frames, width], np.full((frames, width), value, "<f4").tobytes()


def _i32(*values: int) -> tuple[str, list[int], bytes]:
    return "INT32", [len(values)], np.array(values, "<i4").tobytes()


NAN = ("FP32", [512, 2], np.full((512, 2), np.nan, "<f4").tobytes())
BAD_ENCODER = [
    (_request("nope", audio=_f32(512, 2)), "NOT_FOUND", "unknown model 'nope'"),
    (_request(version="7", audio=_f32(512, 2)), "NOT_FOUND", "no loadable version 7"),
    (_request(version="v1", audio=_f32(512, 2)), "INVALID_ARGUMENT", "positive integer"),
    (_request(version="\u0661", audio=_f32(512, 2)), "INVALID_ARGUMENT", "positive integer"),
    (_request(audio=("FP64", [512, 2], bytes(8192))), "INVALID_ARGUMENT", "must be FP32"),
    (_request(audio=_f32(512, 3)), "INVALID_ARGUMENT", "[frames, 2]"),
    (_request(audio=("FP32", [512, 2], bytes(100))), "INVALID_ARGUMENT", "needs 4096 raw bytes"),
    (_request(audio=("FP32", [512], bytes(2048))), "INVALID_ARGUMENT", "[frames, channels]"),
    (_request(latents=_f32(2, 8)), "INVALID_ARGUMENT", "unknown input 'latents'"),
    (_request(present=_i32(0)), "INVALID_ARGUMENT", "missing input audio"),
    (_request(audio=_f32(512, 1), present=_i32(2)), "INVALID_ARGUMENT", "channel 2 out of range"),
    (_request(audio=_f32(512, 1), present=_i32(-1)), "INVALID_ARGUMENT", "channel -1 out of range"),
    (_request(audio=_f32(512, 2), present=_i32(1, 1)), "INVALID_ARGUMENT", "given twice"),
    (_request(audio=_f32(512, 2), present=_i32(1, 0)), "INVALID_ARGUMENT", "strictly increasing"),
    (_request(audio=_f32(512, 2), present=_i32(1)), "INVALID_ARGUMENT", "present channel [1]"),
    (_request(audio=NAN), "INVALID_ARGUMENT", "NaN or Inf"),  # EncodeClip's own check
    (_request(audio=_f32(0, 2)), "INVALID_ARGUMENT", "empty"),
]
BAD_DECODER = [
    (_request(latents=_f32(4, 7)), "INVALID_ARGUMENT", "[frames, 8]"),
    (
        _request(latents=_f32(4, 8), present=_i32(0)),
        "INVALID_ARGUMENT",
        "'audio', which is missing",
    ),
    (_request(audio=_f32(512, 2)), "INVALID_ARGUMENT", "missing input latents"),
    # more present audio than the latents stand for: DecodeClip's own length check
    (_request(latents=_f32(1, 8), audio=_f32(4096, 2)), "INVALID_ARGUMENT", "bytes"),
]


def test_bad_requests_get_clear_statuses(servers) -> None:
    enc, dec = servers
    for server, cases in ((enc, BAD_ENCODER), (dec, BAD_DECODER)):
        with channel(server.target) as ch:
            stub = pb_grpc.GRPCInferenceServiceStub(ch)
            for request, code, message in cases:
                with pytest.raises(grpc.RpcError) as err:
                    stub.ModelInfer(request)
                assert err.value.code().name == code, (request.inputs, err.value.details())
                assert message in err.value.details(), (message, err.value.details())
            # typed and raw contents mixed; raw entries not one per input; an unknown output
            mixed = _request(latents=_f32(2, 8))
            mixed.inputs[0].contents.fp32_contents[:] = [0.0] * 16
            short = _request(latents=_f32(2, 8))
            short.raw_input_contents.append(b"")
            unknown_output = _request(latents=_f32(2, 8), audio=_f32(512, 2))
            unknown_output.outputs.add(name="nope")
            for request in (mixed, short, unknown_output):
                with pytest.raises(grpc.RpcError) as err:
                    stub.ModelInfer(request)
                assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert stub.ServerLive(pb.ServerLiveRequest()).live  # nothing crashed
    # tritonclient sees the same statuses
    client = tg.InferenceServerClient(enc.target)
    with pytest.raises(InferenceServerException) as err:
        client.infer("tiny", [tensor("audio", audio(512))], model_version="9")
    assert err.value.status() == "StatusCode.NOT_FOUND"
    with pytest.raises(InferenceServerException) as err:
        client.get_model_metadata("nope")
    assert err.value.status() == "StatusCode.NOT_FOUND"


def test_health_and_reflection_list_the_service(servers) -> None:
    for server in servers:
        with channel(server.target) as ch:
            status = health_pb2_grpc.HealthStub(ch).Check(
                health_pb2.HealthCheckRequest(service=OIP)
            )
            assert status.status == health_pb2.HealthCheckResponse.SERVING
            refl = reflection_pb2_grpc.ServerReflectionStub(ch)
            requests = [
                reflection_pb2.ServerReflectionRequest(list_services=""),
                reflection_pb2.ServerReflectionRequest(file_containing_symbol=OIP),
                reflection_pb2.ServerReflectionRequest(
                    file_containing_symbol=server.running.service.full_name
                ),
            ]
            listed, oip, own = refl.ServerReflectionInfo(iter(requests))
        names = {s.name for s in listed.list_services_response.service}
        assert {OIP, server.running.service.full_name, "mcrave.v1.ModelService"} <= names
        # what `grpcurl describe` needs: the file defining each service
        for reply, service in (
            (oip, "GRPCInferenceService"),
            (own, server.running.service.full_name.split(".")[-1]),
        ):
            files = [
                descriptor_pb2.FileDescriptorProto.FromString(raw)
                for raw in reply.file_descriptor_response.file_descriptor_proto
            ]
            assert service in {s.name for f in files for s in f.service}


def _fields(message: descriptor_pb2.DescriptorProto) -> list[tuple]:
    """A message's wire contract: every field's number, name, type and label, nested included."""
    out = [(message.name, f.number, f.name, f.type, f.label, f.type_name) for f in message.field]
    for nested in message.nested_type:
        out += [(message.name, *row) for row in _fields(nested)]
    return out


def _file(serialized: bytes) -> descriptor_pb2.FileDescriptorProto:
    return descriptor_pb2.FileDescriptorProto.FromString(serialized)


def test_wire_contract_matches_tritonclient() -> None:
    """Field numbers and types equal tritonclient's own descriptors (wire compatibility)."""
    ours, theirs = _file(pb.DESCRIPTOR.serialized_pb), _file(triton_pb.DESCRIPTOR.serialized_pb)
    assert ours.package == theirs.package == "inference"
    their_messages = {m.name: m for m in theirs.message_type}
    for message in ours.message_type:
        assert _fields(message) == _fields(their_messages[message.name]), message.name
    (service,) = ours.service
    their_methods = {m.name: m for s in theirs.service if s.name == service.name for m in s.method}
    for method in service.method:
        twin = their_methods[method.name]
        assert (method.input_type, method.output_type) == (twin.input_type, twin.output_type)
