"""OpenTelemetry tracing, configured only by the standard `OTEL_*` variables, off unless asked.

On when `OTEL_TRACES_EXPORTER` names an exporter (`otlp`, `console`, or both, comma-separated) or
an OTLP endpoint is set (`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`);
off when none is, with `OTEL_TRACES_EXPORTER=none`, or with `OTEL_SDK_DISABLED=true`. The SDK
reads the rest itself, by its specification (endpoint, headers, `OTEL_SERVICE_NAME`,
`OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER`, ...). The SDK is imported only when tracing
is on: off, the hooks check one module attribute and do nothing else.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Tracer

SHIPPED = ("otlp", "console")
SCOPE = "switchboard"

tracer: Tracer | None = None  # None: tracing is off
content = False  # BOT_TRACE_CONTENT: message text may go into attributes
_provider: TracerProvider | None = None


class TracingError(Exception):
    """The `OTEL_*` variables ask for something this program cannot do; says what to set."""


def exporters(environ: Mapping[str, str]) -> tuple[str, ...]:
    """The exporters the `OTEL_*` variables ask for; () when tracing is off."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return ()
    given = environ.get("OTEL_TRACES_EXPORTER", "")
    names = tuple(name.strip().lower() for name in given.split(",") if name.strip())
    if not names:
        endpoint = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get(
            "OTEL_EXPORTER_OTLP_ENDPOINT"
        )
        names = ("otlp",) if endpoint else ()
    unknown = [name for name in names if name not in (*SHIPPED, "none")]
    if unknown:
        raise TracingError(
            f"OTEL_TRACES_EXPORTER={given}: Switchboard ships the otlp (HTTP) and console "
            "exporters; use otlp (the OpenTelemetry Collector, Jaeger, Tempo and most vendors "
            "accept it), console, or none"
        )
    names = tuple(name for name in names if name != "none")
    protocol = environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get(
        "OTEL_EXPORTER_OTLP_PROTOCOL", ""
    )
    if "otlp" in names and protocol.strip() not in ("", "http/protobuf"):
        raise TracingError(
            f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol}: Switchboard ships the http/protobuf OTLP "
            "exporter; set http/protobuf and point OTEL_EXPORTER_OTLP_ENDPOINT at the HTTP port "
            "(4318 on the OpenTelemetry Collector)"
        )
    return names


def configure(environ: Mapping[str, str] | None = None, *, trace_content: bool = False) -> bool:
    """Turn tracing on as the `OTEL_*` variables say (default: the process environment);
    whether it is on. Raises `TracingError` for a setting it cannot honour."""
    given = os.environ if environ is None else environ
    names = exporters(given)
    if not names:
        return False
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    named = "OTEL_SERVICE_NAME" in given or "service.name=" in given.get(
        "OTEL_RESOURCE_ATTRIBUTES", ""
    )
    provider = TracerProvider(resource=Resource.create({} if named else {"service.name": SCOPE}))
    for name in names:
        if name == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        else:  # console: on stderr, out of the way of the console's chat and command output
            provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter(out=sys.stderr)))
    trace.set_tracer_provider(provider)  # for libraries' own instrumentation, too
    use(provider, trace_content=trace_content)
    return True


def use(provider: TracerProvider, *, trace_content: bool = False) -> None:
    """Trace into `provider` (tests give one with an in-memory exporter)."""
    global tracer, content, _provider
    _provider = provider
    tracer = provider.get_tracer(SCOPE)
    content = trace_content


def shutdown() -> None:
    """Send what is buffered and turn tracing off."""
    global tracer, content, _provider
    provider, _provider, tracer, content = _provider, None, None, False
    if provider is not None:
        provider.shutdown()


def current_ids() -> tuple[str, str] | None:
    """The current trace and span ids (hex), for log lines; None when tracing is off."""
    if tracer is None:
        return None
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")
