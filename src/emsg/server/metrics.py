"""Prometheus metrics, in a registry per app (so several apps fit in one process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "emsg_http_requests",
            "HTTP requests by route template, method and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "emsg_http_request_seconds",
            "HTTP request latency by route template",
            ["route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 30),
            registry=self.registry,
        )
        self.envelopes_accepted = Counter(
            "emsg_envelopes_accepted", "Envelopes committed by sends", registry=self.registry
        )
        self.envelopes_delivered = Counter(
            "emsg_envelopes_delivered",
            "Envelope events handed to devices (sync replies and stream frames)",
            registry=self.registry,
        )
        self.open_websockets = Gauge(
            "emsg_open_websockets", "Authenticated WebSocket streams", registry=self.registry
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
