"""When the client sends a request again, and after how long.

Idempotent requests are sent again when the connection failed or broke off, and on a 503 that
says when to come back (Retry-After): reads, and writes that carry an Idempotency-Key (the
client gives every write one). A write without one is not: an increment whose answer was lost
may have been counted, and one answered 503 may still be counted (the ingress's producer keeps
what it had already sent), so sending it again could count it twice. The one exception is a
connection that was never made, which sent nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from distcount_client._exceptions import ClientError, TransportError, Unavailable
from distcount_core import Backoff


@dataclass(frozen=True)
class Retry:
    """At most `attempts` sends of one request, `first_s` apart and then twice as long each
    time up to `max_s` (distcount_core's Backoff). A 503 is waited out for its Retry-After, or
    not retried if that is past `max_retry_after_s`. `Retry(attempts=1)` never retries."""

    attempts: int = 3
    first_s: float = 0.1
    max_s: float = 2.0
    max_retry_after_s: float = 10.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"attempts must be at least 1, not {self.attempts}")
        Backoff(self.first_s, self.max_s)  # refuses a schedule that cannot be

    def backoff(self) -> Backoff:
        """A schedule for one request (each request has its own: a client is shared)."""
        return Backoff(self.first_s, self.max_s)

    def delay_s(
        self, error: ClientError, *, idempotent: bool, attempt: int, backoff: Backoff
    ) -> float | None:
        """How long to wait before sending the request again after `attempt` failed with
        `error`, or None: raise it."""
        if attempt >= self.attempts or not error.retriable:
            return None
        if isinstance(error, TransportError) and (idempotent or not error.request_sent):
            return backoff.next_s()
        if isinstance(error, Unavailable) and idempotent:
            assert error.retry_after_s is not None  # retriable says it is there
            if error.retry_after_s > self.max_retry_after_s:
                return None
            return max(error.retry_after_s, backoff.next_s())
        return None
