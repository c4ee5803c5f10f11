"""The ingress's exceptions, each an answer the HTTP layer knows how to give.

IngressError
 └── Unavailable           Kafka cannot take the increment now: 503 with Retry-After (retriable)
      ├── KafkaUnavailable  not connected, or no acknowledgement before the deadline
      └── Overloaded        too many sends already await their acknowledgement

A 503 means "not acknowledged", not "not written": the broker may have written the record and
the answer may have been lost (or come after the deadline), so a 503 increment may still be
counted. A 202 is only ever given for an acknowledged record.
"""

from __future__ import annotations

from distcount_core import DistcountError


class IngressError(DistcountError):
    """Root of the ingress's own exceptions."""

    retriable = False


class Unavailable(IngressError):
    retriable = True
    # what the Retry-After header tells the client
    retry_after_s = 1
    # the `cause` tag of the 503 counter
    cause = "kafka"


class KafkaUnavailable(Unavailable):
    pass


class Overloaded(Unavailable):
    cause = "overloaded"
