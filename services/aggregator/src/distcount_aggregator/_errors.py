"""The aggregator's exceptions.

AggregatorError
 └── AssignmentFailed   stored offsets could not be read or sought on assignment (fatal)
"""


class AggregatorError(Exception):
    pass


class AssignmentFailed(AggregatorError):
    """Without its stored offsets a partition would be read from the wrong place: stop instead."""
