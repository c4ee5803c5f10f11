"""The local distcount stack without Docker: Apache Kafka from Maven Central, and PostgreSQL."""

from distcount_devstack._errors import DevStackError
from distcount_devstack._stack import ComponentStatus, Stack

__all__ = ["ComponentStatus", "DevStackError", "Stack"]
