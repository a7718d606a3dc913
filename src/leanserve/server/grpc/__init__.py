"""The Open Inference Protocol over gRPC: ``inference.GRPCInferenceService`` of KServe V2 / Triton.

``leanserve serve REPO --grpc-port 8001`` (or ``Server(..., grpc_port=8001)``) serves it over
HTTP/2 on the event loop that serves HTTP, so that both front ends reach models through the same
:class:`~leanserve.router.Router`: one registry, one batcher per version (gRPC and HTTP requests
share batches), one set of statistics. The modules: :mod:`.wire` (gRPC's framing, timeouts and
status trailers), :mod:`.transport` (HTTP/2 with ``h2``, and why not grpcio's server),
:mod:`.service` (the methods), :mod:`.codec` and :mod:`.messages` (protobuf in and out),
:mod:`.status` (errors to status codes).

Why the messages come from tritonclient rather than a vendored ``.proto``: tritonclient's wheel
ships the code generated from Triton's ``grpc_service.proto`` and ``model_config.proto``
(``tritonclient.grpc.service_pb2``, ``model_config_pb2``), and protobuf keeps one registry of
message names per process. A second copy generated from a vendored ``.proto`` would register the
same names (``inference.ModelInferRequest``, ...) again, and any process holding both a leanserve
server and a tritonclient gRPC client (our tests, benchmarks, an application that embeds the
server) would fail at import as soon as the two copies differ by one field, which they would
after the next Triton release. Importing the client's modules keeps one definition that is, by
construction, the one tritonclient speaks, and nothing to regenerate at build time. The cost is
a dependency on tritonclient (small and pure Python) and its protobuf pin (``<7``).

An experiment's unit comes in the metadata ``x-leanserve-unit`` (the experiment's ``unit_header``),
as over HTTP in the header. ``leanserve_requests_total`` says which requests came over gRPC
(``protocol="grpc"``). Not served: ``ModelStreamInfer``, shared memory, trace and log settings
(they answer ``UNIMPLEMENTED``).
"""

from .service import GrpcFrontEnd

__all__ = ["GrpcFrontEnd"]
