"""The practical limit for B1: a minimal relay in raw asyncpg, no framework.

Per batch it does the same work as the relay and nothing more: claim 500 rows with
``FOR UPDATE SKIP LOCKED``, one Qdrant ``retrieve`` of the batch's point ids, one POST of the
JSON array to the Event API, one UPDATE marking the rows done. No leases checked on finish, no
logs, no metrics, no outcome bookkeeping: the floor a real relay cannot go under.

``python -m bench.raw --dsn ... --url ... --qdrant-path ...`` runs until SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

import aiohttp
import asyncpg
import orjson
from qdrant_client import AsyncQdrantClient

from outbox_relay.domain.isrc import point_id

CLAIM = """
WITH picked AS (
    SELECT id FROM outbox.messages
    WHERE status = 'pending' AND next_attempt_at <= now()
    ORDER BY next_attempt_at, id
    LIMIT $1
    FOR UPDATE SKIP LOCKED
)
UPDATE outbox.messages AS m
SET next_attempt_at = now() + interval '30 seconds', claim_token = gen_random_uuid()
FROM picked WHERE m.id = picked.id
RETURNING m.id, m.isrc, m.title, m.artist, m.album, m.created_at
"""

FINISH = """
UPDATE outbox.messages
SET status = CASE WHEN id = ANY ($2::bigint[]) THEN 'skipped' ELSE 'published' END,
    processed_at = now(), claim_token = NULL
WHERE id = ANY ($1::bigint[])
"""


async def run(dsn: str, url: str, qdrant_path: str, batch: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    # The relay's default session setting (OUTBOX_SYNCHRONOUS_COMMIT=off), so that the limit
    # and the relay do the same work per commit.
    conn = await asyncpg.connect(dsn, server_settings={"synchronous_commit": "off"})
    qdrant = AsyncQdrantClient(path=qdrant_path)
    async with aiohttp.ClientSession() as http:
        print("ready", flush=True)
        while not stop.is_set():
            rows = await conn.fetch(CLAIM, batch)
            if not rows:
                await asyncio.sleep(0.002)
                continue
            pids = [point_id(r["isrc"].strip().upper()) for r in rows]
            found = await qdrant.retrieve(
                "tracks", ids=pids, with_payload=False, with_vectors=False
            )
            indexed = {str(p.id) for p in found}
            events, skipped = [], []
            for row, pid in zip(rows, pids, strict=True):
                if pid in indexed:
                    skipped.append(row["id"])
                    continue
                isrc = row["isrc"].strip().upper()
                events.append(
                    {
                        "name": "track/ingestion.requested",
                        "id": f"track-ingestion-{isrc}",
                        "data": {
                            "isrc": isrc,
                            "title": row["title"],
                            "artist": row["artist"],
                            "album": row["album"],
                        },
                        "ts": int(row["created_at"].timestamp() * 1000),
                    }
                )
            if events:
                async with http.post(
                    url, data=orjson.dumps(events), headers={"Content-Type": "application/json"}
                ) as response:
                    await response.read()
                    response.raise_for_status()
            await conn.execute(FINISH, [r["id"] for r in rows], skipped)
    await qdrant.close()
    await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.raw")
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--url", required=True, help="the full Event API URL, /e/{key}")
    parser.add_argument("--qdrant-path", required=True)
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args()
    asyncio.run(run(args.dsn, args.url, args.qdrant_path, args.batch))


if __name__ == "__main__":
    main()
