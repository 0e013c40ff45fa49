"""``python -m inplay.server``: every Inplay gRPC service in one process (they also deploy separately:
see k8s/), plus grpc.health.v1, server reflection, Prometheus metrics and graceful shutdown.

Stores come from the environment (``inplay.config``): the real Redis/Cassandra/Kafka when
``INPLAY_REDIS_URL`` etc. are set, the embedded in-memory stores otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import signal

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import start_http_server

from inplay import auth, diagnostics, limits
from inplay.app import Runtime, open_runtime, register_services
from inplay.config import Settings, setting_bool
from inplay.logs import setup_logging
from inplay.metrics import MetricsInterceptor
from inplay.servicers.admission import admission_interceptors
from inplay.servicers.guard import InputGuard
from inplay.tracing import TracingInterceptor, setup_tracing

log = logging.getLogger("inplay.server")

GRACE_S = 10.0


async def start_server(runtime: Runtime, port: int, host: str = "127.0.0.1") -> tuple[grpc.aio.Server, int]:
    """Builds and starts the server; returns it and the bound port (``port=0`` picks a free one)."""
    server = grpc.aio.server(
        # Admission control (issue 16) inside metrics/tracing, so that they record its RESOURCE_EXHAUSTED
        # answers; it sheds bet calls before their handler runs (servicers/admission.py).
        # InputGuard last (innermost): undecodable or oversized requests are answered INVALID_ARGUMENT before
        # any handler runs, and the metrics/tracing interceptors around it record that answer.
        interceptors=[TracingInterceptor(), MetricsInterceptor(), *admission_interceptors(), InputGuard()],
        options=[
            ("grpc.max_concurrent_streams", 1000),
            # INPLAY_GRPC_REUSEPORT=1: several server processes share one port (the kernel spreads the
            # connections); each has its own journal shard. Off by default (a second server on a taken port
            # must fail, not silently share it).
            ("grpc.so_reuseport", 1 if setting_bool("INPLAY_GRPC_REUSEPORT") else 0),
            ("grpc.keepalive_time_ms", 30_000),
            # Above limits.MAX_MESSAGE_BYTES on purpose: the guard answers (and counts) what lies between.
            ("grpc.max_receive_message_length", limits.TRANSPORT_MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", limits.MAX_SEND_MESSAGE_BYTES),
        ],
    )
    names = register_services(server, runtime)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ["", *names]:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection([*names, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise RuntimeError(f"could not bind {host}:{port}")
    await server.start()
    runtime.health = health_servicer
    return server, bound


async def serve(settings: Settings, host: str) -> None:
    auth.configure(settings)  # fail at start-up on a bad identity setting, never on the first call
    runtime = await open_runtime(settings)
    tune_gc()
    server, port = await start_server(runtime, settings.grpc_port, host)
    if settings.metrics_port:
        start_http_server(settings.metrics_port, addr=host)
    log.info(
        "serving on %s:%d (%s stores)",
        host,
        port,
        "embedded" if settings.stack.embedded else "real",
        extra={"port": port},
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    # Graceful shutdown: report NOT_SERVING so load balancers drain us, finish in-flight RPCs, then flush
    # the Kafka producer and close the stores.
    log.info("draining")
    if runtime.health is not None:
        await runtime.health.enter_graceful_shutdown()
    await server.stop(GRACE_S)
    await runtime.close()
    log.info("stopped")


def tune_gc() -> None:
    """The bet path and the feed pipeline allocate many short-lived objects per batch or chunk; with
    CPython's default thresholds the cyclic collector runs every 700 allocations and its full passes walk
    every long-lived object (stubs, prepared statements, caches, the mapping table, the price history).
    Long-lived objects are frozen after start-up, and young collections run less often. Reference counting
    still frees almost everything at once; only cycles wait longer. Measured on the ingest path
    (``perf/bench_odds.py --gc server|default``, same run): 69-86 against 93-120 µs of CPU per update."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)


def main() -> None:
    parser = argparse.ArgumentParser(description="Run the Inplay gRPC services")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=None)
    args = parser.parse_args()
    setup_logging()
    diagnostics.install()  # kill -USR1 <pid> prints the asyncio tasks
    setup_tracing("inplay-server")
    settings = Settings.from_env()
    if args.port is not None:
        from dataclasses import replace

        settings = replace(settings, grpc_port=args.port)
    asyncio.run(serve(settings, args.host))


if __name__ == "__main__":
    main()
