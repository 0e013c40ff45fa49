"""OpenTelemetry tracing: one trace per request, from the edge through the services to the stores.

Envoy starts (or continues) the trace and passes W3C ``traceparent`` to the service; the interceptor here
continues it as the RPC's server span; the bet path adds spans around every store call (Redis, Cassandra,
Kafka) with the bet ids as attributes. Spans are exported over OTLP/gRPC when ``INPLAY_OTLP_ENDPOINT`` is
set (e.g. an OpenTelemetry Collector), and dropped otherwise (the API's no-op tracer costs ~nothing).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from inplay.config import setting_str

tracer = trace.get_tracer("inplay")


def setup_tracing(service_name: str = "inplay") -> None:
    """Installs an SDK tracer provider exporting to ``INPLAY_OTLP_ENDPOINT`` (no-op when unset)."""
    endpoint = setting_str("INPLAY_OTLP_ENDPOINT")
    if not endpoint:
        return
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True)))
    trace.set_tracer_provider(provider)


class TracingInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Server span per unary RPC, continuing the caller's trace (``traceparent`` metadata)."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        if not _recording():
            # No SDK provider (INPLAY_OTLP_ENDPOINT unset): a no-op span would still cost ~80 µs a call in
            # context extraction and attach/detach (perf/bench_odds.py --reads), for spans nobody exports.
            return handler
        inner = handler.unary_unary
        method = handler_call_details.method
        carrier = {k: v for k, v in (handler_call_details.invocation_metadata or ()) if isinstance(v, str)}

        async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            parent = propagate.extract(carrier)
            service, _, name = method.lstrip("/").partition("/")
            with tracer.start_as_current_span(
                method.lstrip("/"),
                context=parent,
                kind=SpanKind.SERVER,
                attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": name},
            ) as span:
                try:
                    return await inner(request, context)
                finally:
                    code = context.code()
                    if code is not None and code != grpc.StatusCode.OK:
                        span.set_attribute("rpc.grpc.status_code", code.value[0])
                        span.set_status(Status(StatusCode.ERROR, code.name))

        return grpc.unary_unary_rpc_method_handler(
            unary,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def _recording() -> bool:
    """True once a real (SDK) tracer provider is installed: by :func:`setup_tracing`, or by a test. Checked per
    call, as the provider can be installed after the server was built."""
    return not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider | trace.NoOpTracerProvider)
