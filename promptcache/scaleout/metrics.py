"""The router's own series on the ingress's /metrics: is it routing on the truth?

Per replica, the prompt tokens the router predicted each request would read from a cache and
the tokens the replica then reported reading (`cached_tokens`), the requests where the two
differ by a block or more, whether its reports are trusted now, and the generation of its last
report; per decision reason ("prefix", "affinity", "fallback", ...), how many were made.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from promptcache.scaleout.book import RouterBook


# (snapshot field, kind, series name, help), one series per replica each.
_SERIES = (
    ("predicted_tokens", CounterMetricFamily, "predicted_cached_tokens",
     "Cached prompt tokens the router predicted, per replica"),
    ("actual_tokens", CounterMetricFamily, "actual_cached_tokens", "Cached prompt tokens the replica reported"),
    ("finished", CounterMetricFamily, "finished_requests", "Requests finished on each replica (compared)"),
    ("disagreements", CounterMetricFamily, "disagreements",
     "Requests whose cached tokens differed from the prediction by a block or more"),
    ("trusted", GaugeMetricFamily, "replica_trusted", "1 when the replica's reports are fresh and agree"),
    ("in_flight", GaugeMetricFamily, "in_flight", "This ingress's requests in flight on each replica"),
    ("generation", GaugeMetricFamily, "report_generation", "Generation of the replica's last report"),
    ("blocks_reported", GaugeMetricFamily, "reported_blocks", "Blocks the replica's last report listed"),
)


class RouterCollector(Collector):
    def __init__(self, book: RouterBook):
        self.book = book

    def collect(self) -> Iterator[Metric]:
        snapshot = self.book.snapshot()
        for field, kind, name, text in _SERIES:
            family = kind(f"promptcache_router_{name}", text, labels=["replica"])
            for replica, row in snapshot.items():
                family.add_metric([replica], float(row[field] or 0))
            yield family
        decisions = CounterMetricFamily("promptcache_router_decisions", "Routing decisions by reason",
                                        labels=["reason"])
        for reason, count in dict(self.book.decisions).items():
            decisions.add_metric([reason], count)
        yield decisions
