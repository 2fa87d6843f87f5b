"""Prometheus metrics of ``tftproxy serve``, with the official client (prometheus-client).

Fetch and clean-up figures are counted as they happen (the jobs, the fetcher and the store's
clean-up tell :class:`Metrics`, which implements their observer protocols). TFTP figures are
read at scrape time from the workers' shared memory (:mod:`tftproxy.tftp.counters`), summed
over every worker process, so serving a block costs nothing extra; store size and free space
are read at scrape time too. :meth:`Metrics.render` does file work: call it off the event loop.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from tftproxy import __version__
from tftproxy.jobs.results import FetchResult
from tftproxy.store.gc import GcReport
from tftproxy.store.layout import Layout
from tftproxy.store.usage import usage
from tftproxy.tftp.counters import LATENCY_BUCKETS
from tftproxy.tftp.transfers import OUTCOME_COUNTER

PREFIX = "tftproxy"
# A fetch request lasts from an up-to-date check (milliseconds) to a large download (minutes).
FETCH_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0)
# Why requests were answered with an ERROR (or not at all), by counter.
_REFUSALS = {"not_found": "not_found", "denied": "denied", "write_refused": "write_refused",
             "bad_requests": "bad_request", "busy": "busy", "busy_client": "busy_client"}

TftpCounters = Callable[[], dict[str, int]]


class _TftpCollector(Collector):
    """The TFTP workers' shared counters, summed, as Prometheus metrics."""

    def __init__(self, counters: TftpCounters, workers: Callable[[], int],
                 restarts: Callable[[], int]) -> None:
        self._counters = counters
        self._workers = workers
        self._restarts = restarts

    def collect(self) -> Iterable[Metric]:
        c = self._counters()
        p = f"{PREFIX}_tftp"
        yield CounterMetricFamily(f"{p}_requests", "Datagrams read on the TFTP service ports",
                                  value=c["requests"])
        outcomes = CounterMetricFamily(f"{p}_transfers", "TFTP transfers ended, by outcome",
                                       labels=["outcome"])
        for outcome, counter in OUTCOME_COUNTER.items():
            outcomes.add_metric([outcome.value], c[counter])
        yield outcomes
        refused = CounterMetricFamily(f"{p}_refused", "TFTP requests refused, by reason",
                                      labels=["reason"])
        for counter, reason in _REFUSALS.items():
            refused.add_metric([reason], c[counter])
        yield refused
        for name, key, text in (
            ("sent_bytes", "bytes_sent", "TFTP payload bytes acknowledged by clients"),
            ("packets_sent", "packets_sent", "TFTP datagrams sent"),
            ("retransmits", "retransmits", "TFTP blocks sent again after a timeout"),
            ("duplicate_requests", "duplicate_requests", "TFTP requests sent again by a "
             "client before the first answer reached it"),
            ("ignored_packets", "ignored_packets", "Stray or stale TFTP datagrams ignored"),
            ("held_requests", "held", "TFTP requests held while their file was refreshing"),
        ):
            yield CounterMetricFamily(f"{p}_{name}", text, value=c[key])
        yield GaugeMetricFamily(f"{p}_active_transfers", "TFTP transfers in progress",
                                value=c["active"])
        yield GaugeMetricFamily(f"{p}_holds", "TFTP requests held right now", value=c["holding"])
        yield GaugeMetricFamily(f"{p}_workers", "TFTP worker processes running",
                                value=self._workers())
        yield CounterMetricFamily(f"{p}_worker_restarts", "TFTP workers restarted after dying",
                                  value=self._restarts())
        buckets = []
        running = 0
        for i, bound in enumerate((*LATENCY_BUCKETS, float("inf"))):
            running += c[f"latency_bucket_{i}"]
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), running))
        yield HistogramMetricFamily(
            f"{p}_transfer_latency_seconds",
            "Time from a TFTP request to the last block's acknowledgement, complete transfers",
            buckets=buckets, sum_value=c["latency_sum_us"] / 1e6)


class _StoreCollector(Collector):
    def __init__(self, layout: Layout) -> None:
        self._layout = layout

    def collect(self) -> Iterator[Metric]:
        u = usage(self._layout)
        p = f"{PREFIX}_store"
        yield GaugeMetricFamily(f"{p}_objects", "Stored contents (one per distinct file)",
                                value=u.objects)
        yield GaugeMetricFamily(f"{p}_bytes", "Bytes of stored contents", value=u.object_bytes)
        yield GaugeMetricFamily(f"{p}_names", "Published boot-file names", value=u.names)
        yield GaugeMetricFamily(f"{p}_filesystem_size_bytes",
                                "Size of the TFTP root's file system", value=u.disk_total)
        yield GaugeMetricFamily(f"{p}_filesystem_free_bytes",
                                "Bytes free for tftproxy on the TFTP root's file system",
                                value=u.disk_free)


class _SyncCollector(Collector):
    """Boot-set revalidations by outcome, read from the sync dispatcher at scrape time."""

    def __init__(self, counts: Callable[[], dict[str, int]]) -> None:
        self._counts = counts

    def collect(self) -> Iterator[Metric]:
        counts = self._counts()
        family = CounterMetricFamily(f"{PREFIX}_sync_revalidations",
                                     "Boot-set revalidations ended (background, prefetch and "
                                     "sync requests), by outcome", labels=["outcome"])
        for outcome in ("unchanged", "updated", "failed"):
            family.add_metric([outcome], counts.get(outcome, 0))
        yield family


class Metrics:
    """One process's metrics; it observes the fetcher, the jobs and the clean-up."""

    def __init__(self, layout: Layout) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        Gauge(f"{PREFIX}_build_info", "tftproxy's version", ["version"],
              registry=r).labels(__version__).set(1)
        self.ready = Gauge(f"{PREFIX}_ready", "1 when the service is ready to serve", registry=r)
        self.fetches = Counter(f"{PREFIX}_fetches",
                               "Fetch jobs ended (requests and revalidations), by outcome",
                               ["outcome"], registry=r)
        for outcome in ("published", "unchanged", "ignored", "failed"):
            self.fetches.labels(outcome)
        self.fetch_seconds = Histogram(f"{PREFIX}_fetch_duration_seconds",
                                       "How long fetch requests took, by outcome", ["outcome"],
                                       buckets=FETCH_BUCKETS, registry=r)
        self.fetches_running = Gauge(f"{PREFIX}_fetches_running", "Fetch jobs running",
                                     registry=r)
        self.upstream = Counter(f"{PREFIX}_upstream_responses",
                                "Upstream HTTP responses, by status code and request kind "
                                "(download, manifest)", ["code", "kind"], registry=r)
        self.body_bytes = Counter(f"{PREFIX}_fetch_downloaded_bytes",
                                  "Body bytes downloaded from upstream", registry=r)
        self.verify_failures = Counter(f"{PREFIX}_verification_failures",
                                       "Downloads refused by their distribution's checksums",
                                       registry=r)
        self.gc_runs = Counter(f"{PREFIX}_gc_runs", "Clean-ups run", registry=r)
        self.gc_freed = Counter(f"{PREFIX}_gc_freed_bytes", "Bytes freed by clean-up",
                                registry=r)
        self.gc_deleted = Counter(f"{PREFIX}_gc_deleted_objects", "Contents deleted by clean-up",
                                  registry=r)
        r.register(_StoreCollector(layout))

    def add_tftp(self, counters: TftpCounters, workers: Callable[[], int],
                 restarts: Callable[[], int]) -> None:
        self.registry.register(_TftpCollector(counters, workers, restarts))

    def add_sync(self, counts: Callable[[], dict[str, int]]) -> None:
        self.registry.register(_SyncCollector(counts))

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type (file work: off the event loop)."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    # ------------------------------------------------------ fetch observer

    def response(self, status: int, kind: str) -> None:
        self.upstream.labels(str(status), kind).inc()

    def downloaded(self, size: int) -> None:
        self.body_bytes.inc(size)

    # ------------------------------------------------------- job observer

    def fetch_started(self) -> None:
        self.fetches_running.inc()

    def fetch_finished(self, result: FetchResult, seconds: float) -> None:
        self.fetches_running.dec()
        self.fetches.labels(result.status).inc()
        self.fetch_seconds.labels(result.status).observe(seconds)

    def verification_failed(self, reason: str) -> None:
        self.verify_failures.inc()

    # ----------------------------------------------------------- clean-up

    def collected(self, report: GcReport) -> None:
        self.gc_runs.inc()
        self.gc_freed.inc(report.freed_bytes)
        self.gc_deleted.inc(len(report.deleted))
