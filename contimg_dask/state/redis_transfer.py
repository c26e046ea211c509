"""Seed an empty Redis state store from a dump (``contimg state import``; the dump format
is in transfer.py)."""

from __future__ import annotations

import json
from typing import Any

import redis

from contimg_dask.state.records import PENDING
from contimg_dask.state.transfer import stage_rows


def load_dump(pipe: redis.client.Pipeline, p: str, dump: dict[str, Any]
              ) -> redis.client.Pipeline:
    """Queue on ``pipe`` (a transaction) the writes that put everything in ``dump`` under
    the instance prefix ``p``; the caller executes it."""
    for f in dump["files"]:
        pipe.hset(p + "files:" + f["block_id"], f["path"], json.dumps(f))
        pipe.hset(p + "file_block", f["path"], f["block_id"])
    for b in dump["blocks"]:
        pipe.sadd(p + "blocks", b["block_id"])
        pipe.hset(p + "block:" + b["block_id"], mapping={
            k: "" if v is None else v for k, v in b.items()})
    for seq, s in stage_rows(dump):
        task = f"{s['block_id']}|{s['stage']}"
        pipe.zadd(p + "stages", {task: seq})
        pipe.sadd(p + "block_stages:" + s["block_id"], task)
        pipe.hset(p + "stage:" + task, mapping={
            **{k: "" if v is None else v for k, v in s.items()
               if k not in ("result", "error")},
            "result": json.dumps(s["result"]) if s["result"] else "",
            "error": json.dumps(s["error"]) if s["error"] else "", "failed_token": ""})
        if s["status"] == PENDING:  # the queue entry of redis_scripts' ``entry``
            entry = f"{s['block_id']}\0{seq:015d}\0{s['stage']}"
            pipe.zadd(p + "pending", {entry: 0})
            pipe.zadd(p + "pending:" + s["stage"], {entry: 0})
    pipe.set(p + "queue", len(dump["stages"]))
    pipe.set(p + "stage_ids", len(dump["stages"]))
    pipe.set(p + "fence", dump["fence"])
    for prod in dump["products"]:
        pipe.rpush(p + "products:" + prod["block_id"], json.dumps(prod))
        pipe.sadd(p + "product_blocks", prod["block_id"])
    for config_hash, config in dump.get("configurations", {}).items():
        pipe.hset(p + "configurations", config_hash, json.dumps(config))
    for s in dump["solutions"]:
        pipe.hset(p + "solutions", s["solutions_id"], json.dumps(s))
    for u in dump["solutions_uses"]:
        pipe.hset(p + "solutions_use", f"{u['block_id']}|{u['solutions_id']}", u["used_at"])
    for failure in dump["failures"]:
        pipe.rpush(p + "failures", json.dumps(failure))
    for e in dump["events"]:
        pipe.xadd(p + "events", {"kind": e["kind"], "data": json.dumps(e["data"]),
                                 "at": repr(e["at"])})
    for n, m in enumerate(dump["metrics"]["raw"]):
        pipe.zadd(f"{p}m:raw:{m['name']}", {json.dumps(
            {"v": m["value"], "b": m["block_id"], "n": f"import-{n}"}): m["at"]})
    for rate, key in (("minute", "minute"), ("block", "block_id")):
        for m in dump["metrics"][rate]:
            pipe.sadd(p + "m:names", m["name"])
            pipe.hset(f"{p}m:{rate}:{m['name']}", str(m[key]), json.dumps({
                "sum": m["sum"], "count": m["count"], "min": m["min"], "max": m["max"],
                "last_at": m.get("last_at", m.get("minute", 0))}))
    return pipe
