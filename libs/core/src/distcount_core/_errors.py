"""The root of the project's exceptions: a command catches `DistcountError` and prints it.

DistcountError                 (distcount_core)
 ├── ConfigError               a setting is missing or wrong (distcount_config)
 ├── InvalidIncrement          input that breaks the increment's rules (distcount_codec)
 │    └── InvalidJSON
 ├── InvalidRecord             a Kafka record that breaks the record contract (distcount_codec)
 ├── StoreError                PostgreSQL (distcount_store); `retriable` says if a retry can help
 ├── DevStackError             the local stack (distcount_devstack)
 ├── DevStackMissing           `distcount dev` without the dev extra installed (distcount_cli)
 ├── IngressError              an answer the ingress gives (distcount_ingress)
 ├── AggregatorError           the aggregator cannot go on (distcount_aggregator)
 └── ClientError               what a client of the HTTP API meets (distcount_client)

`retriable` is read by the code that retries: it is True where the same call may succeed later
unchanged (a server that went away), False where only a change of input or setup helps.
"""

from __future__ import annotations


class DistcountError(Exception):
    """Root of every exception distcount raises on purpose."""

    retriable: bool = False


def describe(exc: BaseException) -> str:
    """`Class: message`, the class named once: aiokafka's errors start their message with their
    class name already, and a message-less exception is its class name alone."""
    name = exc.__class__.__name__
    text = str(exc)
    if isinstance(exc, TimeoutError) and not text:
        return "TimeoutError: no answer in time"
    if not text:
        return name
    return text if text.startswith(name) else f"{name}: {text}"
