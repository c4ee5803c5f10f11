"""The aggregator's exceptions.

AggregatorError
 ├── AssignmentFailed   stored offsets could not be read or sought on assignment
 ├── FlushImpossible    PostgreSQL refuses the flush itself (privileges, schema): no retry helps
 └── KafkaClientBroken  the Kafka client can no longer fetch (a restart mends it)

Each stops the process (after a last flush where one can still be made), with its message.
"""

from distcount_core import DistcountError


class AggregatorError(DistcountError):
    """The aggregator cannot go on: the process stops with this message."""


class AssignmentFailed(AggregatorError):
    """Without its stored offsets a partition would be read from the wrong place: stop instead."""


class KafkaClientBroken(AggregatorError):
    """A task the Kafka client needs has ended: this process cannot fetch again."""


class FlushImpossible(AggregatorError):
    """PostgreSQL refused a flush's statements (not the connection): retrying cannot help."""
