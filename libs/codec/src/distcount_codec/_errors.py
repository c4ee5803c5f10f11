"""What the codec raises:

DistcountError (and ValueError)
 ├── InvalidIncrement   input that breaks the rules; `errors` maps each field to its problems
 │    └── InvalidJSON   bytes that are not JSON at all (the ingress answers 400, not 422)
 └── InvalidRecord      a Kafka record that breaks the contract; the message is the DLQ reason
"""

from __future__ import annotations

from distcount_core import DistcountError


class InvalidIncrement(DistcountError, ValueError):
    """Input that breaks the rules; `errors` maps each field to what is wrong with it."""

    def __init__(self, errors: dict[str, list[str]]) -> None:
        super().__init__("; ".join(f"{f}: {', '.join(m)}" for f, m in errors.items()))
        self.errors = errors


class InvalidJSON(InvalidIncrement):
    """Bytes that are not JSON; `detail` is what the parser said."""

    def __init__(self, detail: str) -> None:
        super().__init__({"body": [f"is not valid JSON: {detail}"]})
        self.detail = detail


class InvalidRecord(DistcountError, ValueError):
    """A Kafka record that breaks the contract; the message is the reason given to the DLQ."""
