"""A client of distcount's HTTP API, sync (`Client`) and async (`AsyncClient`).

with Client("http://127.0.0.1:3333") as client:
    written = client.incr("c1")
    client.wait_for(written)  # or its token, written.token
    print(client.get_counter_value("c1").value)
"""

from distcount_client._async import AsyncClient
from distcount_client._exceptions import (
    AccessDenied,
    ClientError,
    InvalidInput,
    NotCountedYet,
    NotFound,
    TransportError,
    Unavailable,
    UnexpectedAnswer,
)
from distcount_client._models import Counted, Counter, Entry, History, Page, Point, Top, Written
from distcount_client._retry import Retry
from distcount_client._sync import DEFAULT_BASE_URL, Client

__all__ = [
    "DEFAULT_BASE_URL",
    "AccessDenied",
    "AsyncClient",
    "Client",
    "ClientError",
    "Counted",
    "Counter",
    "Entry",
    "History",
    "InvalidInput",
    "NotCountedYet",
    "NotFound",
    "Page",
    "Point",
    "Retry",
    "Top",
    "TransportError",
    "Unavailable",
    "UnexpectedAnswer",
    "Written",
]
