"""Request counts and latencies, served at ``/metrics`` in the Prometheus text format.

Hand-written rather than ``prometheus_client`` because three series do not
justify a dependency: ``nsfl_api_requests_total`` (counter),
``nsfl_api_request_duration_seconds`` (histogram) and
``nsfl_api_requests_in_flight`` (gauge).

Labels are the *route template* (``/api/v1/namespaces/{ns}/jobs/{name}``),
never the concrete path: a path holds names chosen by users, and one series
per job name would grow without bound and leak names across namespaces to
whoever scrapes.  Requests that match no route share ``route="unmatched"``.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
UNMATCHED = "unmatched"
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


@dataclass
class _Histogram:
    counts: list[int] = field(default_factory=lambda: [0] * len(BUCKETS))
    total: float = 0.0
    observations: int = 0

    def observe(self, seconds: float) -> None:
        index = bisect.bisect_left(BUCKETS, seconds)
        if index < len(BUCKETS):
            self.counts[index] += 1
        self.total += seconds
        self.observations += 1


class RequestMetrics:
    """The counters of one API server process (single event loop: no locking needed)."""

    def __init__(self) -> None:
        self._requests: dict[tuple[str, str, int], int] = {}
        self._latency: dict[tuple[str, str], _Histogram] = {}
        self.in_flight = 0

    def record(self, method: str, route: str, status: int, seconds: float) -> None:
        self._requests[(method, route, status)] = self._requests.get((method, route, status), 0) + 1
        self._latency.setdefault((method, route), _Histogram()).observe(seconds)

    def count(self, method: str, route: str, status: int) -> int:
        return self._requests.get((method, route, status), 0)

    def render(self) -> str:
        lines = [
            "# HELP nsfl_api_requests_total REST requests by method, route template and status.",
            "# TYPE nsfl_api_requests_total counter",
        ]
        for (method, route, status), value in sorted(self._requests.items()):
            lines.append(
                f'nsfl_api_requests_total{{method="{method}",route="{_escape(route)}",status="{status}"}} {value}'
            )
        lines += [
            "# HELP nsfl_api_request_duration_seconds Time to handle a REST request.",
            "# TYPE nsfl_api_request_duration_seconds histogram",
        ]
        for (method, route), histogram in sorted(self._latency.items()):
            labels = f'method="{method}",route="{_escape(route)}"'
            cumulative = 0
            for bound, count in zip(BUCKETS, histogram.counts, strict=True):
                cumulative += count
                lines.append(
                    f'nsfl_api_request_duration_seconds_bucket{{{labels},le="{bound}"}} {cumulative}'
                )
            lines.append(
                f'nsfl_api_request_duration_seconds_bucket{{{labels},le="+Inf"}} {histogram.observations}'
            )
            lines.append(f"nsfl_api_request_duration_seconds_sum{{{labels}}} {histogram.total:.6f}")
            lines.append(f"nsfl_api_request_duration_seconds_count{{{labels}}} {histogram.observations}")
        lines += [
            "# HELP nsfl_api_requests_in_flight REST requests being handled now.",
            "# TYPE nsfl_api_requests_in_flight gauge",
            f"nsfl_api_requests_in_flight {self.in_flight}",
        ]
        return "\n".join(lines) + "\n"


def route_label(request: web.Request) -> str:
    """The template of the matched route, or ``unmatched`` (404/405 from the router)."""
    info = request.match_info
    if info.http_exception is not None:
        return UNMATCHED
    canonical = info.route.resource.canonical if info.route.resource is not None else None
    return canonical or UNMATCHED


def metrics_middleware(metrics: RequestMetrics) -> Callable[..., Awaitable[web.StreamResponse]]:
    """Count every request with the status it ended with (outermost, so error bodies count too)."""

    @web.middleware
    async def middleware(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        started = time.perf_counter()
        metrics.in_flight += 1
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            metrics.in_flight -= 1
            method = request.method if request.method in KNOWN_METHODS else "OTHER"
            metrics.record(method, route_label(request), status, time.perf_counter() - started)

    return middleware
