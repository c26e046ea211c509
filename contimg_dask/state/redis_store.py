"""The shared state store: Redis, for many pipeline processes on many hosts.

Claims, completions, failures and the reaper are Lua scripts (atomic on the server; see
redis_scripts.py). Values are JSON, never pickle: whoever can write to the store must not be
able to run code in our processes. Every key starts with ``contimg:{<instance>}:``. The
server must persist with AOF (docs/state.md); the store warns at connect when it does not.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from contimg_dask.config.schema import StateConfig
from contimg_dask.errors import (
    LeaseLostError,
    StateAccessError,
    StateCorruptError,
    StateError,
    StateSchemaError,
    StateUnavailableError,
)
from contimg_dask.logs import get_logger
from contimg_dask.stages.contract import StageResult, product_provenance
from contimg_dask.state import redis_scripts as lua
from contimg_dask.state.records import (
    MINUTE_S,
    RUNNING,
    BlockRecord,
    Event,
    FailureRecord,
    FileRecord,
    Lease,
    MetricPoint,
    MetricRate,
    MetricSample,
    ProductRecord,
    Solutions,
    StageStatus,
)
from contimg_dask.state.sqlite_schema import APPLICATION
from contimg_dask.state.summary import lease_rejected_failure, status_summary
from contimg_dask.state.transfer import check_dump

log = get_logger(__name__)
T = TypeVar("T")
DAY_S = 86400.0
REDIS_SCHEMA = 2


def redacted(url: str) -> str:
    """``url`` without its password (what error messages and status show)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def connect(settings: StateConfig) -> redis.Redis:
    """A redis-py client for ``settings.url`` (strings decoded; no client-side retries:
    callers classify errors themselves)."""
    assert settings.url is not None  # the schema requires it for this backend
    options = settings.redis
    return redis.Redis.from_url(
        settings.url, username=options.username,
        password=options.password.get_secret_value() if options.password else None,
        socket_connect_timeout=options.connect_timeout_s,
        socket_timeout=options.socket_timeout_s, decode_responses=True,
        retry=Retry(NoBackoff(), 0))


def _opt(value: str | None) -> str | None:
    return value if value else None


def _float(value: str | None) -> float | None:
    return float(value) if value else None


class RedisStateStore:
    """The Redis implementation of :class:`~contimg_dask.state.protocol.StateStore`."""

    backend = "redis"

    def __init__(self, settings: StateConfig, *, migrate: bool = False) -> None:
        assert settings.url is not None  # the schema requires it for this backend
        self.settings = settings
        self.location = redacted(settings.url)
        self.prefix = f"contimg:{{{settings.instance}}}:"
        self._redis = connect(settings)
        self._scripts = {name: self._redis.register_script(getattr(lua, name)) for name in (
            "REGISTER_FILE", "REGISTER_FILE_NEAR", "RENAME_BLOCK", "SEAL_BLOCK", "ENQUEUE",
            "CLAIM", "HEARTBEAT", "COMPLETE", "FAIL", "REAP", "RECORD_METRICS", "INIT_META",
            "MIGRATE_2", "STAGE_TALLY")}
        self._groups: set[str] = set()
        self.persistence = self._call(self._check_persistence)
        self._version = self._call(lambda: self._check_schema(migrate))

    # -- plumbing ---------------------------------------------------------------------------

    def _call(self, action: Callable[[], T]) -> T:
        """Run ``action``, turning redis-py's errors into classified StateErrors that name
        the server."""
        try:
            return action()
        except (redis.AuthenticationError, redis.exceptions.AuthenticationWrongNumberOfArgsError,
                redis.exceptions.NoPermissionError) as exc:
            raise StateAccessError(f"Redis refused us (check state.redis.username/password "
                                   f"and the ACL): {exc}", file=self.location) from exc
        except redis.ResponseError as exc:
            if str(exc).startswith(("WRONGPASS", "NOAUTH", "NOPERM")):
                raise StateAccessError(f"Redis refused us (check state.redis.username/"
                                       f"password and the ACL): {exc}",
                                       file=self.location) from exc
            if str(exc).startswith(("LOADING", "BUSY", "MASTERDOWN", "TRYAGAIN")):
                raise StateUnavailableError(f"Redis is not ready: {exc}",
                                            file=self.location) from exc
            raise StateError(f"Redis error: {exc}", file=self.location) from exc
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise StateUnavailableError(f"cannot reach Redis: {exc}",
                                        file=self.location) from exc

    def _run(self, script: str, *args: Any) -> Any:
        return self._call(lambda: self._scripts[script](args=[self.prefix, *args]))

    def _check_persistence(self) -> dict[str, str]:
        try:
            found = {**self._redis.config_get("appendonly"),
                     **self._redis.config_get("appendfsync")}
        except redis.ResponseError:  # CONFIG disabled or not allowed by the ACL
            return {"appendonly": "unknown", "appendfsync": "unknown"}
        if found.get("appendonly") != "yes":
            log.warning("Redis at %s runs without AOF (appendonly %s): a restart loses "
                        "state; see docs/state.md", self.location, found.get("appendonly"))
        return found

    def _check_schema(self, migrate: bool) -> int:
        """Create the meta record in an empty keyspace; refuse foreign keys and newer
        schemas; bring an older schema up to date with ``migrate``, else refuse it.

        Schema 2 (from 1): the pending queues hold ``block NUL seq NUL stage`` entries at
        score 0, so a claim reads each queue's first entry instead of every entry."""
        reply = self._scripts["INIT_META"](args=[self.prefix, APPLICATION, REDIS_SCHEMA,
                                                 self.settings.instance])
        if reply == "foreign":
            raise StateCorruptError(f"keys under {self.prefix} that are not a contimg "
                                    "state store (no meta record)", file=self.location)
        meta = dict(zip(reply[::2], reply[1::2], strict=True))
        if meta.get("application") != APPLICATION:
            raise StateCorruptError(f"{self.prefix}meta belongs to another application "
                                    f"({meta.get('application')!r})", file=self.location)
        version = int(meta.get("schema", 0))
        if version > REDIS_SCHEMA:
            raise StateSchemaError(f"the Redis state has schema {version}, newer than this "
                                   f"contimg-dask knows ({REDIS_SCHEMA}): upgrade "
                                   "contimg-dask", file=self.location)
        if version < REDIS_SCHEMA:
            if not migrate:
                raise StateSchemaError(
                    f"the Redis state has schema {version}, older than this contimg-dask's "
                    f"({REDIS_SCHEMA}): run `contimg state migrate` (stop the pipelines "
                    "first; save the Redis data with BGSAVE if you want a way back)",
                    file=self.location)
            moved = self._scripts["MIGRATE_2"](args=[self.prefix])
            log.warning("Redis state at %s migrated from schema %d to %d (%d pending "
                        "stages requeued in the new order)", self.location, version,
                        REDIS_SCHEMA, int(moved))
            version = REDIS_SCHEMA
        return version

    def close(self) -> None:
        self._redis.close()

    def schema_version(self) -> int:
        return self._version

    def ping(self) -> bool:
        return bool(self._call(self._redis.ping))

    # -- files and blocks -------------------------------------------------------------------

    def register_file(self, block_id: str, path: str, subband: int | None) -> bool:
        record = FileRecord(path, block_id, subband, time.time())
        return bool(self._run("REGISTER_FILE", block_id, path, json.dumps(record.to_dict()),
                              record.registered_at))

    def register_file_near(self, block_ids: Sequence[str], path: str, subband: int | None
                           ) -> tuple[str, bool]:
        block, new = self._run("REGISTER_FILE_NEAR", path,
                               "" if subband is None else subband, time.time(), *block_ids)
        return block, bool(new)

    def rename_block(self, block_id: str, new_id: str) -> bool:
        reply = self._run("RENAME_BLOCK", block_id, new_id)
        if reply == "missing":
            raise StateError(f"no block {block_id} in the state store", block=block_id,
                             file=self.location)
        return reply == "ok"

    def seal_block(self, block_id: str, expected_files: int, deadline_s: float,
                   now: float | None = None) -> str:
        status = self._run("SEAL_BLOCK", block_id, expected_files, deadline_s,
                           time.time() if now is None else now)
        if status is None:
            raise StateError(f"no block {block_id} in the state store", block=block_id,
                             file=self.location)
        return status

    @staticmethod
    def _block(h: dict[str, str]) -> BlockRecord:
        return BlockRecord(h["block_id"], h["status"], int(h["n_files"]),
                           float(h["first_seen"]), _float(h["sealed_at"]))

    def block(self, block_id: str) -> BlockRecord | None:
        h = self._call(lambda: self._redis.hgetall(self.prefix + "block:" + block_id))
        return self._block(h) if h else None

    def blocks(self, status: str | None = None) -> list[BlockRecord]:
        ids = sorted(self._call(lambda: self._redis.smembers(self.prefix + "blocks")))
        pipe = self._redis.pipeline(transaction=False)
        for block_id in ids:
            pipe.hgetall(self.prefix + "block:" + block_id)
        records = [self._block(h) for h in self._call(pipe.execute)]
        return [b for b in records if status is None or b.status == status]

    def files(self, block_id: str) -> list[FileRecord]:
        raw = self._call(lambda: self._redis.hvals(self.prefix + "files:" + block_id))
        records = [FileRecord.from_dict(json.loads(v)) for v in raw]
        return sorted(records, key=lambda f: (f.subband is None, f.subband or 0, f.path))

    # -- stages and leases ------------------------------------------------------------------

    def enqueue(self, block_id: str, stage: str, *, retry_failed: bool = False,
                redo: bool = False) -> bool:
        return bool(self._run("ENQUEUE", block_id, stage, int(retry_failed), time.time(),
                              int(redo)))

    def claim(self, worker: str, lease_s: float,
              stages: Iterable[str] | None = None) -> Lease | None:
        wanted = list(stages) if stages is not None else []
        if stages is not None and not wanted:
            return None
        got = self._run("CLAIM", worker, lease_s, *wanted)
        if not got:
            return None
        return Lease(got[0], got[1], worker, int(got[2]), float(got[3]), int(got[4]))

    def _refused(self, lease: Lease, action: str, reply: list[str]) -> LeaseLostError:
        exc = LeaseLostError(f"{action} with fencing token {lease.token} refused: the stage "
                             f"is {reply[1]} with token {reply[2] or None}",
                             block=lease.block_id, stage=lease.stage, file=self.location)
        failure = lease_rejected_failure(lease, exc, time.time())
        pipe = self._redis.pipeline(transaction=True)
        pipe.rpush(self.prefix + "failures", json.dumps(failure.to_dict()))
        pipe.xadd(self.prefix + "events", {
            "kind": "lease_rejected", "at": repr(failure.at),
            "data": json.dumps({**lease.to_dict(), "message": exc.message})})
        self._call(pipe.execute)
        return exc

    @staticmethod
    def _task(lease: Lease) -> str:
        return f"{lease.block_id}|{lease.stage}"

    def heartbeat(self, lease: Lease, lease_s: float) -> Lease:
        reply = self._run("HEARTBEAT", self._task(lease), lease.token, lease_s)
        if reply[0] != "ok":
            raise self._refused(lease, "heartbeat", reply)
        return Lease(lease.block_id, lease.stage, lease.worker, lease.token, float(reply[1]),
                     lease.attempt)

    def complete(self, lease: Lease, result: StageResult) -> None:
        now = time.time()
        record = result.to_dict()
        products = [json.dumps(ProductRecord(
            lease.block_id, lease.stage, p["kind"], p["path"], p["checksum"],
            product_provenance(record["provenance"], p), lease.token, now,
            p["collection"]).to_dict()) for p in record["products"]]
        config = result.provenance.config
        if config is not None:  # before the products that refer to it; kept once per hash
            self._call(lambda: self._redis.hsetnx(self.prefix + "configurations",
                                                  result.provenance.config_hash,
                                                  json.dumps(config)))
        reply = self._run("COMPLETE", self._task(lease), lease.token, json.dumps(record), now,
                          record["seconds"], *products)
        if reply[0] != "ok":
            raise self._refused(lease, "complete", reply)

    def fail(self, lease: Lease, exc: BaseException, input: str | None = None) -> str:
        failure = FailureRecord.from_exception(exc, block_id=lease.block_id,
                                               stage=lease.stage, worker=lease.worker,
                                               at=time.time(), input=input)
        reply = self._run("FAIL", self._task(lease), lease.token,
                          json.dumps(failure.to_dict()), int(failure.transient),
                          self.settings.max_attempts, failure.at)
        if reply[0] != "ok":
            raise self._refused(lease, "fail", reply)
        return reply[1]

    def reap(self, now: float | None = None) -> list[Lease]:
        flat = self._run("REAP", "" if now is None else repr(now), self.settings.max_attempts)
        return [Lease(flat[i], flat[i + 1], flat[i + 2], int(flat[i + 3]),
                      float(flat[i + 4]), int(flat[i + 5])) for i in range(0, len(flat), 6)]

    @staticmethod
    def _stage(h: dict[str, str]) -> StageStatus:
        return StageStatus(
            block_id=h["block_id"], stage=h["stage"], status=h["status"],
            attempts=int(h["attempts"]), token=int(h["token"]) if h["token"] else None,
            worker=_opt(h["worker"]), expires_at=_float(h["expires_at"]),
            result=json.loads(h["result"]) if h["result"] else None,
            error=json.loads(h["error"]) if h["error"] else None,
            updated_at=float(h["updated_at"]))

    def stage_status(self, block_id: str, stage: str) -> StageStatus | None:
        h = self._call(lambda: self._redis.hgetall(f"{self.prefix}stage:{block_id}|{stage}"))
        return self._stage(h) if h else None

    def stages(self, block_id: str | None = None,
               status: str | None = None) -> list[StageStatus]:
        tasks = self._call(lambda: self._redis.zrange(self.prefix + "stages", 0, -1))
        if block_id is not None:
            tasks = [t for t in tasks if t.rsplit("|", 1)[0] == block_id]
        pipe = self._redis.pipeline(transaction=False)
        for task in tasks:
            pipe.hgetall(self.prefix + "stage:" + task)
        found = [self._stage(h) for h in self._call(pipe.execute)]
        return [s for s in found if status is None or s.status == status]

    def products(self, block_id: str | None = None,
                 kind: str | None = None) -> list[ProductRecord]:
        if block_id is None:
            blocks = sorted(self._call(
                lambda: self._redis.smembers(self.prefix + "product_blocks")))
        else:
            blocks = [block_id]
        pipe = self._redis.pipeline(transaction=False)
        for b in blocks:
            pipe.lrange(self.prefix + "products:" + b, 0, -1)
        records = [ProductRecord.from_dict(json.loads(v))
                   for rows in self._call(pipe.execute) for v in rows]
        return [p for p in records if kind is None or p.kind == kind]

    def configuration(self, config_hash: str) -> dict[str, Any] | None:
        found = self._call(lambda: self._redis.hget(self.prefix + "configurations",
                                                    config_hash))
        return json.loads(found) if found else None

    def configurations(self) -> dict[str, dict[str, Any]]:
        found = self._call(lambda: self._redis.hgetall(self.prefix + "configurations"))
        return {h: json.loads(c) for h, c in found.items()}

    # -- calibration registry ---------------------------------------------------------------

    def register_solutions(self, solutions: Solutions) -> bool:
        return bool(self._call(lambda: self._redis.hsetnx(
            self.prefix + "solutions", solutions.solutions_id,
            json.dumps(solutions.to_dict()))))

    def set_solutions_status(self, solutions_id: str, status: str) -> None:
        key = self.prefix + "solutions"

        def update(pipe: redis.client.Pipeline) -> None:
            raw = pipe.hget(key, solutions_id)
            if raw is None:
                raise StateError(f"no solutions {solutions_id} in the registry",
                                 file=self.location)
            pipe.multi()
            pipe.hset(key, solutions_id, json.dumps({**json.loads(raw), "status": status}))

        self._call(lambda: self._redis.transaction(update, key))

    def all_solutions(self) -> list[Solutions]:
        raw = self._call(lambda: self._redis.hvals(self.prefix + "solutions"))
        found = [Solutions.from_dict(json.loads(v)) for v in raw]
        return sorted(found, key=lambda s: (s.registered_at, s.solutions_id))

    def solutions_for(self, dec_deg: float, at: float,
                      dec_tolerance_deg: float) -> Solutions | None:
        usable = [s for s in self.all_solutions()
                  if s.status == "valid" and abs(s.strip_dec_deg - dec_deg) <= dec_tolerance_deg
                  and s.valid_from <= at <= s.valid_until]
        return max(usable, key=lambda s: (s.valid_from, s.registered_at), default=None)

    def record_solutions_use(self, block_id: str, solutions_id: str) -> None:
        self._call(lambda: self._redis.hsetnx(self.prefix + "solutions_use",
                                              f"{block_id}|{solutions_id}", time.time()))

    def all_solutions_uses(self) -> list[dict[str, Any]]:
        raw = self._call(lambda: self._redis.hgetall(self.prefix + "solutions_use"))
        uses = []
        for field, used_at in raw.items():
            block_id, solutions_id = field.rsplit("|", 1)
            uses.append({"block_id": block_id, "solutions_id": solutions_id,
                         "used_at": float(used_at)})
        return sorted(uses, key=lambda u: u["used_at"])

    def solutions_users(self, solutions_id: str) -> list[str]:
        return sorted(u["block_id"] for u in self.all_solutions_uses()
                      if u["solutions_id"] == solutions_id)

    # -- failures ---------------------------------------------------------------------------

    def record_failure(self, failure: FailureRecord) -> None:
        self._call(lambda: self._redis.rpush(self.prefix + "failures",
                                             json.dumps(failure.to_dict())))

    def failures(self, limit: int = 100, block_id: str | None = None
                 ) -> list[FailureRecord]:
        key = self.prefix + "failures"
        raw = self._call(lambda: self._redis.lrange(key, 0 if block_id else -limit, -1))
        found = [FailureRecord.from_dict(json.loads(v)) for v in raw]
        if block_id is not None:
            found = [f for f in found if f.block_id == block_id][-limit:]
        return found

    # -- events -----------------------------------------------------------------------------

    def emit(self, kind: str, data: dict[str, Any]) -> str:
        return self._call(lambda: self._redis.xadd(self.prefix + "events", {
            "kind": kind, "data": json.dumps(data), "at": repr(time.time())}))

    @staticmethod
    def _event(entry_id: str, fields: dict[str, str]) -> Event:
        return Event(entry_id, fields["kind"], json.loads(fields["data"]), float(fields["at"]))

    def events(self, after: str | None = None, count: int = 100) -> list[Event]:
        low = f"({after}" if after else "-"
        entries = self._call(lambda: self._redis.xrange(self.prefix + "events", low, "+",
                                                        count=count))
        return [self._event(i, f) for i, f in entries]

    def _ensure_group(self, group: str) -> None:
        if group in self._groups:
            return
        try:
            self._redis.xgroup_create(self.prefix + "events", group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._groups.add(group)

    def read_group(self, group: str, consumer: str, count: int = 100) -> list[Event]:
        stream = self.prefix + "events"

        def read() -> list[tuple[str, dict | None]]:
            self._ensure_group(group)
            got: list[tuple[str, dict | None]] = []
            mine = self._redis.xreadgroup(group, consumer, {stream: "0"}, count=count)
            got += mine[0][1] if mine else []
            if len(got) < count:
                idle_ms = int(self.settings.event_redelivery_s * 1000)
                claimed = self._redis.xautoclaim(stream, group, consumer, idle_ms, "0-0",
                                                 count=count - len(got))
                got += claimed[1]
            if len(got) < count:
                new = self._redis.xreadgroup(group, consumer, {stream: ">"},
                                             count=count - len(got))
                got += new[0][1] if new else []
            gone = [i for i, fields in got if not fields]  # trimmed before delivery
            if gone:
                self._redis.xack(stream, group, *gone)
            return got

        seen: dict[str, Event] = {}
        for entry_id, fields in self._call(read):
            if fields:
                seen.setdefault(entry_id, self._event(entry_id, fields))
        return sorted(seen.values(), key=lambda e: tuple(map(int, e.id.split("-"))))

    def ack(self, group: str, ids: Iterable[str]) -> int:
        ids = list(ids)
        if not ids:
            return 0
        return self._call(lambda: self._redis.xack(self.prefix + "events", group, *ids))

    # -- metrics ----------------------------------------------------------------------------

    def record_metrics(self, samples: Iterable[MetricSample]) -> None:
        rows = [[s.name, float(s.value), s.at, s.block_id] for s in samples]
        if rows:
            self._run("RECORD_METRICS", json.dumps(rows))

    def metric_names(self) -> list[str]:
        return sorted(self._call(lambda: self._redis.smembers(self.prefix + "m:names")))

    def _aggregates(self, rate: str, name: str) -> dict[str, dict[str, float]]:
        raw = self._call(lambda: self._redis.hgetall(f"{self.prefix}m:{rate}:{name}"))
        return {k: json.loads(v) for k, v in raw.items()}

    def metric_series(self, name: str, rate: MetricRate, since: float | None = None,
                      until: float | None = None) -> list[MetricPoint]:
        low = -1e300 if since is None else since
        high = 1e300 if until is None else until
        if rate == "raw":
            rows = self._call(lambda: self._redis.zrangebyscore(
                f"{self.prefix}m:raw:{name}", low, high, withscores=True))
            return [MetricPoint(name, at, v, v, v, 1)
                    for at, v in ((at, json.loads(m)["v"]) for m, at in rows)]
        if rate == "minute":
            items = sorted((float(k), a) for k, a in self._aggregates("minute", name).items()
                           if float(k) + MINUTE_S > low and float(k) <= high)
        else:
            items = sorted((k, a) for k, a in self._aggregates("block", name).items()
                           if low <= a["last_at"] <= high)
        return [MetricPoint(name, int(k) if rate == "minute" else k, a["sum"] / a["count"],
                            a["min"], a["max"], a["count"]) for k, a in items]

    def prune(self, now: float | None = None) -> dict[str, int]:
        now = time.time() if now is None else now
        keep = self.settings.retention
        removed = {"raw": 0, "minute": 0, "block": 0, "events": 0}
        for name in self.metric_names():
            if keep.raw_days is not None:
                removed["raw"] += self._call(lambda n=name: self._redis.zremrangebyscore(
                    f"{self.prefix}m:raw:{n}", "-inf", f"({now - keep.raw_days * DAY_S}"))
            for rate, days in (("minute", keep.minute_days), ("block", keep.block_days)):
                if days is None:
                    continue
                cutoff = now - days * DAY_S
                old = [k for k, a in self._aggregates(rate, name).items()
                       if (float(k) if rate == "minute" else a["last_at"]) < cutoff]
                if old:
                    removed[rate] += self._call(lambda r=rate, n=name, o=old: self._redis.hdel(
                        f"{self.prefix}m:{r}:{n}", *o))
        if keep.events_days is not None:
            cutoff_ms = int((now - keep.events_days * DAY_S) * 1000)
            removed["events"] = self._call(lambda: self._redis.xtrim(
                self.prefix + "events", minid=f"{cutoff_ms}-0"))
        return removed

    # -- whole store ------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        # counted by one read-only script (STAGE_TALLY): no stage result is sent or decoded
        tally, running = self._run("STAGE_TALLY")
        counts: dict[str, dict[str, int]] = {}
        for key, n in zip(tally[::2], tally[1::2], strict=True):
            stage, status = key.split("\0")
            counts.setdefault(stage, {})[status] = int(n)
        leases = [StageStatus(b, st, RUNNING, int(a), int(t) if t else None, _opt(w),
                              _float(e), None, None, float(u))
                  for b, st, w, t, a, e, u in running]
        summary = status_summary(self, self._call(self._server_time), tally=(counts, leases))
        summary["persistence"] = self.persistence
        return summary

    def _server_time(self) -> float:
        seconds, micro = self._redis.time()
        return seconds + micro / 1e6

    def export(self) -> dict[str, Any]:
        from contimg_dask.state.transfer import dump_store

        return dump_store(self)

    def fence(self) -> int:
        return int(self._call(lambda: self._redis.get(self.prefix + "fence")) or 0)

    def metric_aggregates(self, rate: MetricRate) -> list[dict[str, Any]]:
        out = []
        for name in self.metric_names():
            for key, a in self._aggregates(rate, name).items():
                row = {"name": name, "minute" if rate == "minute" else "block_id":
                       int(float(key)) if rate == "minute" else key,
                       "sum": a["sum"], "count": a["count"], "min": a["min"], "max": a["max"]}
                if rate == "block":
                    row["last_at"] = a["last_at"]
                out.append(row)
        return out

    def raw_samples(self) -> list[MetricSample]:
        samples = []
        for name in self.metric_names():
            rows = self._call(lambda n=name: self._redis.zrange(
                f"{self.prefix}m:raw:{n}", 0, -1, withscores=True))
            for member, at in rows:
                m = json.loads(member)
                samples.append(MetricSample(name, m["v"], at, m["b"]))
        return sorted(samples, key=lambda s: s.at)

    def import_dump(self, dump: dict[str, Any]) -> None:
        from contimg_dask.state.redis_transfer import load_dump

        check_dump(dump, self.location)
        if self._call(lambda: self._redis.exists(self.prefix + "stages",
                                                 self.prefix + "blocks")):
            raise StateError("import needs an empty state store", file=self.location)
        self._call(load_dump(self._redis.pipeline(transaction=True), self.prefix,
                             dump).execute)
