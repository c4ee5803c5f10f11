"""The metric names Etsy's daemon files the services' metrics under, in plain StatsD and in
DogStatsD, and the services' settings for each."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from distcount_metrics import CATALOG, PREFIX, Kind, Metric
from tests.integration.statsd.daemon import Flushed

SERVICE_INTERVAL_MS: Final = 200


@dataclass(frozen=True)
class Dialect:
    reporter: str  # DISTCOUNT_METRICS
    constant_tags: tuple[tuple[str, str], ...] = ()  # DISTCOUNT_METRICS_TAGS, as pairs
    # the README's example, as the daemon files it
    readme_example: str = ""

    def settings(self, port: int) -> dict[str, str]:
        """The services' DISTCOUNT_* settings (without the prefix) for the daemon on `port`."""
        settings = {
            "metrics": self.reporter,
            "statsd_host": "127.0.0.1",
            "statsd_port": str(port),
            "metrics_interval_ms": str(SERVICE_INTERVAL_MS),
            "metrics_sample_rate": "1",
        }
        if self.constant_tags:
            settings["metrics_tags"] = ",".join(f"{k}:{v}" for k, v in self.constant_tags)
        return settings

    def key(self, metric: Metric, **tags: str | int) -> str:
        """The key Etsy's daemon files `metric` under, with these tag values.

        Plain StatsD: the values as last segments of the name, in the catalog's order. DogStatsD:
        the daemon turns `|#route:increment,env:test` into `;route=increment;env=test`.
        """
        assert sorted(tags) == sorted(metric.tags), (metric.full_name, metric.tags, tags)
        values = [str(tags[name]) for name in metric.tags]
        if self.reporter == "statsd":
            return ".".join([metric.full_name, *values])
        pairs = [*zip(metric.tags, values, strict=True), *self.constant_tags]
        return metric.full_name + "".join(f";{name}={value}" for name, value in pairs)

    def metric_of(self, key: str) -> Metric | None:
        """The catalog's metric a key the daemon received stands for, if its name and tags are
        what that metric's are."""
        for metric in CATALOG:
            if self.reporter == "statsd":
                if key == metric.full_name and not metric.tags:
                    return metric
                rest = key.removeprefix(metric.full_name + ".")
                values = rest.split(".")
                if rest != key and len(values) == len(metric.tags) and all(values):
                    return metric
            else:
                name, *pairs = key.split(";")
                names = [pair.partition("=")[0] for pair in pairs]
                expected = [*metric.tags, *(tag for tag, _ in self.constant_tags)]
                if name == metric.full_name and names == expected:
                    return metric
        return None


STATSD: Final = Dialect("statsd", readme_example="distcount.ingress.requests.increment.202")
DOGSTATSD: Final = Dialect(
    "dogstatsd",
    constant_tags=(("env", "test"),),
    readme_example="distcount.ingress.requests;route=increment;status=202;env=test",
)


def wrong_keys(flushed: Flushed, dialect: Dialect) -> list[str]:
    """Keys under the distcount prefix that are no catalog metric of the section's kind."""
    sections: list[tuple[Kind, dict[str, float]]] = [
        (Kind.COUNTER, flushed.counters),
        (Kind.GAUGE, flushed.gauges),
        (Kind.TIMER, flushed.timer_counts),
    ]
    wrong = []
    for kind, section in sections:
        for key in section:
            if not key.startswith(PREFIX + "."):
                continue  # the daemon's own, and the probes
            metric = dialect.metric_of(key)
            if metric is None or metric.kind is not kind:
                found = "no catalog metric" if metric is None else f"a {metric.kind}"
                wrong.append(f"{key} (received as a {kind}, but {found})")
    return wrong
