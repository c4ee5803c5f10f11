"""distcount's HTTP ingress: increments in, acknowledged Kafka records out, totals read back.

Start reading at `_app.py` (routes and answers), then `_publisher.py` (what a 202 and a 503 mean).
"""

from distcount_ingress._app import MAX_BATCH_ITEMS, CounterReader, Publisher, create_app
from distcount_ingress._errors import IngressError, KafkaUnavailable, Overloaded, Unavailable
from distcount_ingress._publisher import KafkaPublisher
from distcount_ingress._serve import collect_garbage_rarely, run, serve
from distcount_ingress._totals import PostgresTotals

__all__ = [
    "MAX_BATCH_ITEMS",
    "CounterReader",
    "IngressError",
    "KafkaPublisher",
    "KafkaUnavailable",
    "Overloaded",
    "PostgresTotals",
    "Publisher",
    "Unavailable",
    "collect_garbage_rarely",
    "create_app",
    "run",
    "serve",
]
