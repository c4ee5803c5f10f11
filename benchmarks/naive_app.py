"""The handler a user would write without distcount: Starlette awaiting aiokafka's
`send_and_wait` per request. benchmarks/ingress_openloop.py measures the ingress against it.

One plain `AIOKafkaProducer` (default settings: acks=1, neither idempotent nor transactional)
is started in the lifespan. `POST /increment` parses the body, checks it minimally (a non-empty
string key, an integer value), sends the increment and answers 202 once the broker has
acknowledged it. `POST /increments` takes `{"increments": [...]}` (the ingress's body), sends
every item, then awaits them all: a batch is not atomic here (a failure half-way leaves the
records already written). Served by uvicorn with the settings distcount_ingress.serve uses
(uvloop, httptools, lifespan on, no access log, one worker, log level info); no tuning beyond
that, as a user would leave it. JSON goes through orjson, as in bare_app.py, so what sets this
server apart from that one is Kafka, and how it is waited for.

The broker and the topic come from the environment, as the services read them:
`DISTCOUNT_KAFKA_BOOTSTRAP` (default 127.0.0.1:9092) and `DISTCOUNT_TOPIC` (required).

    DISTCOUNT_TOPIC=t .venv/bin/python benchmarks/naive_app.py --port 8002
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from typing import Any

import orjson
import uvicorn
import uvloop
from aiokafka import AIOKafkaProducer
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

BOOTSTRAP = os.environ.get("DISTCOUNT_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
TOPIC = os.environ["DISTCOUNT_TOPIC"]


def valid(item: Any) -> bool:
    return (
        isinstance(item, dict)
        and isinstance(item.get("key"), str)
        and item["key"] != ""
        and type(item.get("value")) is int
    )


def answer(status_code: int, payload: object) -> Response:
    return Response(orjson.dumps(payload), status_code=status_code, media_type="application/json")


async def increment(request: Request) -> Response:
    item = orjson.loads(await request.body())
    if not valid(item):
        return answer(422, {"error": "want {key: non-empty string, value: integer}"})
    producer: AIOKafkaProducer = request.state.producer
    await producer.send_and_wait(TOPIC, orjson.dumps(item), key=item["key"].encode())
    return answer(202, {"data": item})


async def increments(request: Request) -> Response:
    body = orjson.loads(await request.body())
    items = body.get("increments") if isinstance(body, dict) else None
    if not isinstance(items, list) or not items or not all(valid(item) for item in items):
        return answer(422, {"error": "want {increments: [{key, value}, ...]}"})
    producer: AIOKafkaProducer = request.state.producer
    sent = [await producer.send(TOPIC, orjson.dumps(i), key=i["key"].encode()) for i in items]
    await asyncio.gather(*sent)
    return answer(202, {"data": {"increments": items}})


async def ready(request: Request) -> Response:
    return answer(200, {"status": "ok"})


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
    producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP)
    await producer.start()
    try:
        yield {"producer": producer}  # request.state.producer
    finally:
        await producer.stop()


app = Starlette(
    routes=[
        Route("/increment", increment, methods=["POST"]),
        Route("/increments", increments, methods=["POST"]),
        Route("/health/ready", ready, methods=["GET"]),
    ],
    lifespan=lifespan,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_level="info",
    )
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(uvicorn.Server(config).serve())


if __name__ == "__main__":
    main()
