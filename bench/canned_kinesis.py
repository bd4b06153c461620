"""A canned Kinesis server for the benchmarks, in a process of its own: it lists N shards,
answers GetShardIterator and GetRecords, counts the calls by operation and, when asked to,
writes records into random shards at a steady rate.

Each record written carries, as its data, the wall-clock time it was written (`{"put": t}`),
so that a function can tell how long it took to reach it. GetRecords answers what was
written since the iterator's position (at most `Limit`), at the tip of the shard
(`MillisBehindLatest` 0). The parent talks to it over a pipe: it sends the port once
started, then answers "counts" with the call counts, and stops on "stop";
`CannedKinesis` does that side.
"""

from __future__ import annotations

import base64
import multiprocessing
import multiprocessing.connection
import random
import time

import orjson
from local_server import start_local_server

JSON_11 = "application/x-amz-json-1.1"


def shard_id(n: int) -> str:
    return f"shardId-{n:012d}"


def serve(shards: int, conn: multiprocessing.connection.Connection, puts_per_second: float) -> None:
    """The canned stream on a free port of 127.0.0.1."""
    import asyncio

    from aiohttp import web

    calls: dict[str, int] = {}
    written: list[list[dict[str, object]]] = [[] for _ in range(shards)]
    listing = orjson.dumps(
        {
            "Shards": [
                {
                    "ShardId": shard_id(n),
                    "HashKeyRange": {"StartingHashKey": "0", "EndingHashKey": "1"},
                    "SequenceNumberRange": {"StartingSequenceNumber": "1"},
                }
                for n in range(shards)
            ]
        }
    )

    def records_from(iterator: str, limit: int) -> tuple[list[dict[str, object]], str]:
        _, shard, position = iterator.split("-")
        index, start = int(shard), int(position)
        page = written[index][start : start + limit]
        return page, f"it-{index}-{start + len(page)}"

    async def handle(request: web.Request) -> web.Response:
        operation = request.headers.get("X-Amz-Target", "").rpartition(".")[2]
        calls[operation] = calls.get(operation, 0) + 1
        raw = await request.read()
        params = orjson.loads(raw) if raw else {}
        if operation == "ListShards":
            body = listing
        elif operation == "GetShardIterator":
            index = int(params["ShardId"].rpartition("-")[2])
            after = params.get("StartingSequenceNumber")
            start = int(after) if after is not None else 0
            body = orjson.dumps({"ShardIterator": f"it-{index}-{start}"})
        elif operation == "GetRecords":
            page, following = records_from(
                params["ShardIterator"], int(params.get("Limit", 10_000))
            )
            body = orjson.dumps(
                {"Records": page, "NextShardIterator": following, "MillisBehindLatest": 0}
            )
        else:
            return web.Response(status=400, body=b'{"__type":"UnknownOperationException"}')
        return web.Response(body=body, headers={"Content-Type": JSON_11})

    async def write() -> None:
        """Records at random moments (a Poisson process of `puts_per_second`)."""
        while True:
            await asyncio.sleep(random.expovariate(puts_per_second))
            shard = written[random.randrange(shards)]
            now = time.time()
            shard.append(
                {
                    # The sequence number is the record's position in its shard, plus one.
                    "SequenceNumber": str(len(shard) + 1),
                    "ApproximateArrivalTimestamp": now,
                    "Data": base64.b64encode(orjson.dumps({"put": now})).decode(),
                    "PartitionKey": str(len(shard)),
                }
            )

    async def main() -> None:
        runner, port = await start_local_server(handle)
        conn.send(port)
        loop = asyncio.get_running_loop()
        writer = asyncio.create_task(write()) if puts_per_second > 0 else None
        asked = asyncio.Event()
        loop.add_reader(conn.fileno(), asked.set)
        while True:
            await asked.wait()
            asked.clear()
            # The reader can fire once more for a message already read: recv only what came.
            if not conn.poll():
                continue
            if conn.recv() == "stop":
                break
            conn.send(dict(calls))
        if writer is not None:
            writer.cancel()
        await runner.cleanup()

    asyncio.run(main())


class CannedKinesis:
    """The canned server in a process of its own, for a `with` block: its `port`, and the
    calls it counted so far (`counts()`)."""

    def __init__(self, shards: int, puts_per_second: float = 0.0) -> None:
        self._conn, child = multiprocessing.get_context("spawn").Pipe()
        self._process = multiprocessing.get_context("spawn").Process(
            target=serve, args=(shards, child, puts_per_second), name="canned-kinesis", daemon=True
        )
        self._process.start()
        child.close()
        self.port = 0

    def __enter__(self) -> CannedKinesis:
        if not self._conn.poll(60):
            self.__exit__()
            raise SystemExit("the canned Kinesis server did not start")
        self.port = self._conn.recv()
        return self

    def counts(self) -> dict[str, int]:
        self._conn.send("counts")
        answer: dict[str, int] = self._conn.recv()
        return answer

    def __exit__(self, *exc: object) -> None:
        self._conn.send("stop")
        self._process.join(10)
        if self._process.is_alive():
            self._process.terminate()
