"""A no-op Predict server on the reference server's own stack (grpc.aio + aiohttp).

It answers GetModelMetadata with a built-in model's signature and every Predict with one fixed,
pre-serialized answer, doing no decoding, batching or inference. Whatever it costs per request
is the transport's floor: the reference server's req/s divided by this server's, same client,
same run, is the share of the stack that is serving rather than moving bytes. It is also the
target that is never the bottleneck when the load generator's capacity is measured.

Run: python -m benchmarks.noop_server --port=0 --rest_api_port=0 [--model_name=mlp]
It prints TF Serving's two ready lines, so
``harness.servers.server_process.start_server`` starts it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys

import grpc
import numpy as np
from aiohttp import web
from google.protobuf import json_format
from tensorflow.core.framework import tensor_shape_pb2, types_pb2
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import get_model_metadata_pb2, predict_pb2

from harness.models.zoo import model_signature
from reference_server.grpc_api import grpc_server_options

PREDICT = "/tensorflow.serving.PredictionService/Predict"
METADATA = "/tensorflow.serving.PredictionService/GetModelMetadata"
DTYPES = {"float32": types_pb2.DT_FLOAT, "int32": types_pb2.DT_INT32}


def signature_def(builtin: str) -> meta_graph_pb2.SignatureDef:
    """The ``serving_default`` SignatureDef a build of ``builtin`` has (built without TF ops)."""
    spec = model_signature(builtin)
    sig = meta_graph_pb2.SignatureDef(method_name="tensorflow/serving/predict")
    for side, field in (("inputs", sig.inputs), ("outputs", sig.outputs)):
        for alias, tensor in spec[side].items():
            info = field[alias]
            info.name = f"{alias}:0"
            info.dtype = DTYPES[tensor["dtype"]]
            info.tensor_shape.CopyFrom(
                tensor_shape_pb2.TensorShapeProto(
                    dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=s) for s in tensor["shape"]]
                )
            )
    return sig


def metadata_response(model: str, builtin: str) -> get_model_metadata_pb2.GetModelMetadataResponse:
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    response.model_spec.name = model
    response.model_spec.version.value = 1
    sig_map = get_model_metadata_pb2.SignatureDefMap()
    sig_map.signature_def["serving_default"].CopyFrom(signature_def(builtin))
    response.metadata["signature_def"].Pack(sig_map)
    return response


def predict_response(model: str) -> predict_pb2.PredictResponse:
    """One row of the mlp's output, as the reference server would send it."""
    response = predict_pb2.PredictResponse()
    response.model_spec.name = model
    response.model_spec.version.value = 1
    response.model_spec.signature_name = "serving_default"
    out = response.outputs["y"]
    out.dtype = types_pb2.DT_FLOAT
    out.tensor_shape.dim.add(size=1)
    out.tensor_shape.dim.add(size=1)
    out.tensor_content = np.array([[0.5]], np.float32).tobytes()
    return response


def rest_metadata(model: str, builtin: str) -> bytes:
    """``GET /v1/models/NAME/metadata`` as TF Serving shapes it."""
    sig = json_format.MessageToDict(signature_def(builtin), preserving_proto_field_name=True)
    body = {
        "model_spec": {"name": model, "signature_name": "", "version": "1"},
        "metadata": {"signature_def": {"signature_def": {"serving_default": sig}}},
    }
    return json.dumps(body).encode()


def grpc_handlers(model: str, builtin: str) -> grpc.GenericRpcHandler:
    """Bytes in, fixed bytes out: no (de)serializer, so no per-request protobuf work."""
    answers = {
        PREDICT: predict_response(model).SerializeToString(),
        METADATA: metadata_response(model, builtin).SerializeToString(),
    }

    def handler(answer: bytes) -> grpc.RpcMethodHandler:
        async def reply(_request: bytes, _context) -> bytes:
            return answer

        return grpc.unary_unary_rpc_method_handler(reply)

    methods = {path.rsplit("/", 1)[1]: handler(answer) for path, answer in answers.items()}
    return grpc.method_handlers_generic_handler("tensorflow.serving.PredictionService", methods)


def rest_app(model: str, builtin: str) -> web.Application:
    predictions = b'{"predictions": [[0.5]]}'
    metadata = rest_metadata(model, builtin)

    async def predict(request: web.Request) -> web.Response:
        await request.read()  # take the body off the wire, as a real server must
        return web.Response(body=predictions, content_type="application/json")

    async def get_metadata(_request: web.Request) -> web.Response:
        return web.Response(body=metadata, content_type="application/json")

    app = web.Application()
    app.router.add_post(f"/v1/models/{model}:predict", predict)
    app.router.add_get(f"/v1/models/{model}/metadata", get_metadata)
    return app


async def serve(port: int, rest_port: int, model: str, builtin: str) -> None:
    server = grpc.aio.server(options=grpc_server_options())
    server.add_generic_rpc_handlers((grpc_handlers(model, builtin),))
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    runner = web.AppRunner(rest_app(model, builtin), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", rest_port)
    await site.start()
    rest_bound = runner.addresses[0][1]
    print(f"Running gRPC ModelServer at 127.0.0.1:{bound} ...", flush=True)
    print(f"Exporting HTTP/REST API at:localhost:{rest_bound} ...", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(0.5)
    await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.noop_server")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--rest_api_port", type=int, default=0)
    parser.add_argument("--model_name", default="mlp")
    parser.add_argument("--builtin", default="mlp", help="whose signature the metadata shows")
    args = parser.parse_args(argv)
    asyncio.run(serve(args.port, args.rest_api_port, args.model_name, args.builtin))
    return 0


if __name__ == "__main__":
    sys.exit(main())
