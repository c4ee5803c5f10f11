"""The aggregator's exceptions.

AggregatorError
 ├── AssignmentFailed   stored offsets could not be read or sought on assignment (fatal)
 └── KafkaClientBroken  the Kafka client can no longer fetch (fatal; a restart mends it)
"""

from distcount_core import DistcountError


class AggregatorError(DistcountError):
    """The aggregator cannot go on: the process stops with this message."""


class AssignmentFailed(AggregatorError):
    """Without its stored offsets a partition would be read from the wrong place: stop instead."""


class KafkaClientBroken(AggregatorError):
    """A task the Kafka client needs has ended: this process cannot fetch again."""
