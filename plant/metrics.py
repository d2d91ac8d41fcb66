"""Prometheus metrics of the plant, served by the HMI at /metrics.

Two kinds: process-local instruments the line engine and the MQTT bridge observe into
(`DECISION_LATENCY`, `MQTT_*`), and figures read from the store at scrape time
(`StoreCollector`: cells per route, quarantine rate, PLC/XRF health), so that an HMI process
without an engine still reports every line.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from plant.status import HEALTH_OK, read_statuses
from plant.store import Store

REGISTRY = CollectorRegistry(auto_describe=True)

DECISION_LATENCY = Histogram(
    "plant_decision_latency_seconds",
    "Cell present -> diverter target written, per line (budget: p99 <= 20 ms).",
    ["line"],
    buckets=(0.001, 0.002, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1.0),
    registry=REGISTRY,
)

MQTT_PUBLISHED = Counter(
    "plant_mqtt_published",
    "Events handed to the MQTT broker connection, per line.",
    ["line"],
    registry=REGISTRY,
)
MQTT_DROPPED = Counter(
    "plant_mqtt_dropped",
    "Events not published on MQTT: the queue was full during a broker outage, per line.",
    ["line"],
    registry=REGISTRY,
)
MQTT_QUEUED = Gauge(
    "plant_mqtt_queued",
    "Events waiting for the MQTT broker, per line.",
    ["line"],
    registry=REGISTRY,
)
MQTT_CONNECTED = Gauge(
    "plant_mqtt_connected",
    "1 while the MQTT broker is connected, per line.",
    ["line"],
    registry=REGISTRY,
)


class StoreCollector(Collector):
    """Per-line figures from the `line_status` table, read at each scrape."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def collect(self) -> Iterator[Metric]:
        cells = CounterMetricFamily(
            "plant_cells", "Cells routed, per line and route.", labels=["line", "route"]
        )
        qrate = GaugeMetricFamily(
            "plant_quarantine_rate", "Share of recent cells sent to quarantine.", labels=["line"]
        )
        tput = GaugeMetricFamily(
            "plant_throughput_cells_per_minute", "Cells per minute, per line.", labels=["line"]
        )
        plc = GaugeMetricFamily(
            "plant_plc_healthy", "1 if the line's PLC connection is healthy.", labels=["line"]
        )
        xrf = GaugeMetricFamily(
            "plant_xrf_healthy", "1 if the line's XRF heads are healthy.", labels=["line"]
        )
        age = GaugeMetricFamily(
            "plant_status_age_seconds", "Seconds since the line last reported.", labels=["line"]
        )
        for st in read_statuses(self.store):
            for route, n in sorted(st.counts.items()):
                cells.add_metric([st.line, route], n)
            qrate.add_metric([st.line], st.quarantine_rate)
            tput.add_metric([st.line], st.cells_per_min)
            plc.add_metric([st.line], 1.0 if st.plc_health == HEALTH_OK else 0.0)
            xrf.add_metric([st.line], 1.0 if st.xrf_health == HEALTH_OK else 0.0)
            age.add_metric([st.line], st.age_s())
        yield from (cells, qrate, tput, plc, xrf, age)


def exposition(store: Store) -> bytes:
    """The text the /metrics endpoint returns: process instruments plus store figures."""
    per_scrape = CollectorRegistry(auto_describe=False)
    per_scrape.register(StoreCollector(store))
    return generate_latest(REGISTRY) + generate_latest(per_scrape)
