"""The baseline of benchmarks/ingress.py: a bare Starlette `POST /increment` that answers 202
without Kafka, served by uvicorn with the settings distcount_ingress.serve uses (uvloop, httptools,
lifespan on, no access log, one worker, log level info) and the same garbage-collector tuning
(distcount_ingress.collect_garbage_rarely).

What it does per request, and why that is the fair floor: it reads the body and parses it as JSON
(orjson), then echoes it as `{"data": <body>}` with 202 and `application/json`. That is the HTTP
stack's own work plus the JSON in and out that any handler of this route must do. It does no
validation (the rules are distcount's work, measured on our side) and no Kafka.

`POST /increments` (a batch, `{"increments": [...]}`) does the same for the whole body, so that
benchmarks/ingress_openloop.py has a floor for batches too. `GET /health/ready` answers 200, so
that the benchmarks wait for every server the same way.

    .venv/bin/python benchmarks/bare_app.py --port 8001
"""

from __future__ import annotations

import argparse
import asyncio

import orjson
import uvicorn
import uvloop
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from distcount_ingress import collect_garbage_rarely


async def increment(request: Request) -> Response:
    parsed = orjson.loads(await request.body())
    return Response(
        b'{"data":' + orjson.dumps(parsed) + b"}", status_code=202, media_type="application/json"
    )


async def ready(request: Request) -> Response:
    return Response(b'{"status":"ok"}', status_code=200, media_type="application/json")


app = Starlette(
    routes=[
        Route("/increment", increment, methods=["POST"]),
        # the same handler: a batch is read, parsed and echoed whole
        Route("/increments", increment, methods=["POST"]),
        Route("/health/ready", ready, methods=["GET"]),
    ]
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
    server = uvicorn.Server(config)
    # the same process tuning as the real ingress, so the ratio compares request handling only
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner, collect_garbage_rarely():
        runner.run(server.serve())


if __name__ == "__main__":
    main()
