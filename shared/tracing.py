"""Trace context across ingest → teacher → aggregate, as W3C `traceparent` values.

A job's trace starts at ingest. Every message a handler sends carries the handler's span as a `traceparent`
application property; the handler that receives it opens a child span of it, and the teacher's HTTP requests carry
the same header, so one job is one trace end to end (Application Insights shows it as one operation).

No dependency is needed: the context lives in a context variable. When `opentelemetry-api` is installed, each span
is also made OpenTelemetry's current context, so spans that instrumented libraries record join the job's trace.
"""

from __future__ import annotations

import functools
import re
import secrets
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

TRACEPARENT = "traceparent"
_FORMAT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_TRACE_ID = re.compile(r"[0-9a-f]{32}")
_SAMPLED = "01"


@dataclass(frozen=True, slots=True)
class SpanContext:
    trace_id: str  # 32 lower-case hex digits, not all zero
    span_id: str  # 16 lower-case hex digits, not all zero
    flags: str = _SAMPLED

    @property
    def traceparent(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-{self.flags}"

    def child(self) -> SpanContext:
        return SpanContext(self.trace_id, _new_id(8), self.flags)


_current: ContextVar[SpanContext | None] = ContextVar("distill_span", default=None)


def parse(traceparent: str | None) -> SpanContext | None:
    """The span context in a `traceparent` value; None when it is missing or malformed (which starts a new trace)."""
    match = _FORMAT.match((traceparent or "").strip().lower())
    if match is None:
        return None
    trace_id, span_id, flags = match.groups()
    if set(trace_id) == {"0"} or set(span_id) == {"0"}:
        return None
    return SpanContext(trace_id, span_id, flags)


def current() -> SpanContext | None:
    return _current.get()


@contextmanager
def span(parent: str | None = None, *, trace_id: str | None = None) -> Iterator[SpanContext]:
    """Run the block in a new span: a child of `parent` (a traceparent), else of the current span, else the first
    span of trace `trace_id` (a job's stored trace), else of a new trace."""
    base = parse(parent) or current()
    if base is None and trace_id and _TRACE_ID.fullmatch(trace_id):
        base = SpanContext(trace_id, _new_id(8))
    context = base.child() if base else SpanContext(_new_id(16), _new_id(8))
    token = _current.set(context)
    detach = _attach_opentelemetry(context)
    try:
        yield context
    finally:
        detach()
        _current.reset(token)


def message_properties() -> dict[str, str]:
    """Application properties for a message sent from the current span (empty outside any span)."""
    context = current()
    return {TRACEPARENT: context.traceparent} if context else {}


http_headers = message_properties  # the same header travels with the teacher's HTTP requests


def traceparent_of(message: Any) -> str | None:
    """The `traceparent` application property of a received Functions Service Bus message, if it has one."""
    properties: Mapping[str, Any] = getattr(message, "application_properties", None) or {}
    value = properties.get(TRACEPARENT)
    if isinstance(value, bytes):
        value = value.decode("ascii", errors="replace")
    return value if isinstance(value, str) else None


def _new_id(size: int) -> str:
    value = secrets.token_hex(size)
    return value if set(value) != {"0"} else _new_id(size)


@functools.cache
def _opentelemetry() -> tuple[Any, Any] | None:
    """OpenTelemetry's context module and a traceparent propagator; None without opentelemetry-api (looked up once,
    not on every span)."""
    try:
        from opentelemetry import context as otel_context
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
    except ImportError:
        return None
    return otel_context, TraceContextTextMapPropagator()


def _attach_opentelemetry(context: SpanContext) -> Callable[[], None]:
    """Make the span OpenTelemetry's current context when opentelemetry-api is installed; returns the undo."""
    otel = _opentelemetry()
    if otel is None:
        return lambda: None
    otel_context, propagator = otel
    token = otel_context.attach(propagator.extract({TRACEPARENT: context.traceparent}))
    return lambda: otel_context.detach(token)
