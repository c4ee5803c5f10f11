"""The local distcount stack without Docker: an Apache Kafka broker assembled with Maven, and
PostgreSQL."""

from distcount_devstack._errors import DevStackError
from distcount_devstack._health import ComponentStatus
from distcount_devstack._stack import Stack

__all__ = ["ComponentStatus", "DevStackError", "Stack"]
