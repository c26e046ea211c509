"""The archive index in the state store's Redis, under the instance prefix
(``contimg:{<instance>}:archive:...``). Values are JSON, never pickle.

Keys: ``entries`` (hash: product id -> the entry without its provenance as a JSON array in
``records.SEARCH_FIELDS`` order: what a search returns), ``provenance`` (hash: product id
-> the provenance's JSON, added by ``get``),
``where`` (hash: product id -> the JSON list [cell, kind, collection] it is indexed under),
``pos`` (hash: product id -> the unit vector and end time as four packed doubles, what a
cone search tests before fetching any entry),
``cell:<cell>``, ``time`` and ``kind:<kind>`` (sorted sets scored by start time), ``strip``
(sorted set scored by strip declination), ``collections`` (hash: collection -> count),
``meta`` (hash: ``max_span_s``, ``layout``). Adds and removals are Lua scripts, atomic on
the server. A cone search runs on the server too (SEARCH_CONE: the cone's cells, their time
range, the dot product on the ``pos`` records) and answers with one JSON array of the
matching rows, so that only matches travel and one ``json.loads`` decodes them all; other
searches take their candidates from the kind, time or strip sorted set. The remaining
criteria are tested on the rows. The index is derived data: keys of an older layout are
deleted when it is opened, and ``contimg archive sync`` fills the new ones.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import redis

from contimg_dask.archive.records import (
    ROW,
    SEARCH_FIELDS,
    ArchiveEntry,
    SearchQuery,
    SearchResult,
    row_order,
    search_row,
    unit_vector,
)
from contimg_dask.archive.sky_cells import cell_of, cone_cells
from contimg_dask.config.schema import StateConfig
from contimg_dask.errors import StateError, StateUnavailableError
from contimg_dask.state.redis_store import connect, redacted

T = TypeVar("T")
FETCH_BATCH = 5000
#: The layout of the keys (``meta.layout``); keys of another layout are deleted on opening.
LAYOUT = "3"

_UNINDEX = """
local old = redis.call('HGET', A .. 'where', id)
if old then
  local w = cjson.decode(old)
  redis.call('ZREM', A .. 'cell:' .. w[1], id)
  redis.call('ZREM', A .. 'kind:' .. w[2], id)
  redis.call('ZREM', A .. 'time', id)
  redis.call('ZREM', A .. 'strip', id)
  if redis.call('HINCRBY', A .. 'collections', w[3], -1) <= 0 then
    redis.call('HDEL', A .. 'collections', w[3])
  end
  redis.call('HDEL', A .. 'where', id)
  redis.call('HDEL', A .. 'entries', id)
  redis.call('HDEL', A .. 'provenance', id)
  redis.call('HDEL', A .. 'pos', id)
end
"""

#: ARGV: archive prefix, product id, entry JSON (without provenance), cell, kind, collection,
#: time_start, strip dec, span (s), provenance JSON, position ("x y z time_end").
ADD = """
local A, id = ARGV[1], ARGV[2]
""" + _UNINDEX + """
redis.call('HSET', A .. 'entries', id, ARGV[3])
redis.call('HSET', A .. 'provenance', id, ARGV[10])
local px, py, pz, pte = string.match(ARGV[11], '(%S+) (%S+) (%S+) (%S+)')
redis.call('HSET', A .. 'pos', id, struct.pack('dddd', tonumber(px), tonumber(py), tonumber(pz),
                                              tonumber(pte)))
redis.call('HSET', A .. 'where', id, cjson.encode({ARGV[4], ARGV[5], ARGV[6]}))
redis.call('ZADD', A .. 'cell:' .. ARGV[4], ARGV[7], id)
redis.call('ZADD', A .. 'kind:' .. ARGV[5], ARGV[7], id)
redis.call('ZADD', A .. 'time', ARGV[7], id)
redis.call('ZADD', A .. 'strip', ARGV[8], id)
redis.call('HINCRBY', A .. 'collections', ARGV[6], 1)
local span = tonumber(redis.call('HGET', A .. 'meta', 'max_span_s') or '0')
if tonumber(ARGV[9]) > span then redis.call('HSET', A .. 'meta', 'max_span_s', ARGV[9]) end
return 1
"""

#: ARGV: archive prefix, product id. Returns 1 if the product was indexed.
REMOVE = """
local A, id = ARGV[1], ARGV[2]
local present = redis.call('HEXISTS', A .. 'entries', id)
""" + _UNINDEX + """
return present
"""


#: ARGV: archive prefix, the time range's start and end ('' for none), cone centre x, y, z,
#: cos(radius), then the cells. Returns one JSON array of the matching entries' rows: the
#: cells' sorted sets give the products starting in the range widened by the longest span
#: (``meta.max_span_s``), the cone and end-time test run on the compact ``pos`` records
#: (packed doubles), so that only matches travel and are decoded. One round trip.
SEARCH_CONE = """
local A = ARGV[1]
local tfrom, tto = tonumber(ARGV[2]), tonumber(ARGV[3])
local span = tonumber(redis.call('HGET', A .. 'meta', 'max_span_s') or '0')
local low, high = '-inf', '+inf'
if tfrom then low = tfrom - span end
if tto then high = tto end
local cx, cy, cz, c = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local matched = {}
for i = 8, #ARGV do
  local ids = redis.call('ZRANGEBYSCORE', A .. 'cell:' .. ARGV[i], low, high)
  for first = 1, #ids, 1000 do
    local part = {unpack(ids, first, math.min(first + 999, #ids))}
    local pos = redis.call('HMGET', A .. 'pos', unpack(part))
    for j = 1, #part do
      if pos[j] then
        local x, y, z, te = struct.unpack('dddd', pos[j])
        if x * cx + y * cy + z * cz >= c and (tfrom == nil or te >= tfrom) then
          matched[#matched + 1] = part[j]
        end
      end
    end
  end
end
local rows = {}
for first = 1, #matched, 1000 do
  local part = {unpack(matched, first, math.min(first + 999, #matched))}
  local docs = redis.call('HMGET', A .. 'entries', unpack(part))
  for j = 1, #part do
    if docs[j] then rows[#rows + 1] = docs[j] end
  end
end
return '[' .. table.concat(rows, ',') .. ']'
"""


def row_test(query: SearchQuery, *, cone_and_time: bool = True
             ) -> Callable[[list[Any]], bool]:
    """The exact test of ``query``'s criteria on a search row (``cone_and_time=False``: the
    cone and time criteria were tested already, on the server)."""
    tests: list[Callable[[list[Any]], bool]] = []
    if cone_and_time and query.cone is not None:
        ra, dec, radius = query.cone
        (cx, cy, cz), cos_r = unit_vector(ra, dec), math.cos(math.radians(radius))

        def in_cone(row: list[Any]) -> bool:
            x, y, z = unit_vector(row[ROW["ra_deg"]], row[ROW["dec_deg"]])
            return x * cx + y * cy + z * cz >= cos_r

        tests.append(in_cone)
    if cone_and_time and query.time_from is not None:
        tests.append(lambda row, t=query.time_from: row[ROW["time_end"]] >= t)
    if cone_and_time and query.time_to is not None:
        tests.append(lambda row, t=query.time_to: row[ROW["time_start"]] <= t)
    if query.strip_dec_deg is not None:
        tests.append(lambda row, s=query.strip_dec_deg, tol=query.strip_tolerance_deg:
                     abs(row[ROW["strip_dec_deg"]] - s) <= tol)
    if query.kind is not None:
        tests.append(lambda row, k=query.kind: row[ROW["kind"]] == k)
    if query.max_noise_jy is not None:
        tests.append(lambda row, n=query.max_noise_jy: row[ROW["noise_jy"]] is not None
                     and row[ROW["noise_jy"]] <= n)
    return lambda row: all(test(row) for test in tests)


class RedisArchiveIndex:
    """:class:`~contimg_dask.archive.index.ArchiveIndex` in Redis (the state store's server
    and instance prefix)."""

    backend = "redis"

    def __init__(self, settings: StateConfig) -> None:
        self._redis = connect(settings)
        self.location = redacted(settings.url or "")
        self.prefix = f"contimg:{{{settings.instance}}}:archive:"
        self._add = self._redis.register_script(ADD)
        self._remove = self._redis.register_script(REMOVE)
        self._search_cone = self._redis.register_script(SEARCH_CONE)
        self._call(self._check_layout)

    def _check_layout(self) -> None:
        """Delete the keys of an older layout (the index is rebuilt by ``archive sync``)."""
        meta = self.prefix + "meta"
        if self._redis.hget(meta, "layout") == LAYOUT:
            return
        for key in self._redis.scan_iter(match=self.prefix + "*", count=1000):
            self._redis.unlink(key)
        self._redis.hset(meta, "layout", LAYOUT)

    def _call(self, action: Callable[[], T]) -> T:
        try:
            return action()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise StateUnavailableError(f"cannot reach Redis: {exc}",
                                        file=self.location) from exc
        except redis.RedisError as exc:
            raise StateError(f"archive index: Redis error: {exc}", file=self.location) from exc

    def close(self) -> None:
        self._redis.close()

    def add(self, entries: Iterable[ArchiveEntry], batch: int = 2000) -> int:
        n = 0
        pipe = self._redis.pipeline(transaction=False)
        for entry in entries:
            self._add(args=[self.prefix, entry.product_id, json.dumps(search_row(entry)),
                            cell_of(entry.ra_deg, entry.dec_deg), entry.kind,
                            entry.collection, repr(entry.time_start),
                            repr(entry.strip_dec_deg),
                            repr(entry.time_end - entry.time_start), json.dumps(entry.provenance),
                            " ".join(map(repr, (*unit_vector(entry.ra_deg, entry.dec_deg),
                                                entry.time_end)))],
                      client=pipe)
            n += 1
            if n % batch == 0:
                self._call(pipe.execute)
        self._call(pipe.execute)
        return n

    def get(self, product_id: str) -> ArchiveEntry | None:
        pipe = self._redis.pipeline(transaction=False)
        pipe.hget(self.prefix + "entries", product_id)
        pipe.hget(self.prefix + "provenance", product_id)
        doc, provenance = self._call(pipe.execute)
        if not doc:
            return None
        return ArchiveEntry(**dict(zip(SEARCH_FIELDS, json.loads(doc), strict=True)),
                            provenance=json.loads(provenance or "{}"))

    def remove(self, product_id: str) -> bool:
        return bool(self._call(lambda: self._remove(args=[self.prefix, product_id])))

    def count(self) -> int:
        return int(self._call(lambda: self._redis.hlen(self.prefix + "entries")))

    def collections(self) -> dict[str, int]:
        found = self._call(lambda: self._redis.hgetall(self.prefix + "collections"))
        return {k: int(v) for k, v in sorted(found.items())}

    def _candidates(self, query: SearchQuery) -> Iterable[str]:
        """Product ids that may match a query without a cone: from the kind or time sorted
        set, else the strip's, else every entry."""
        span = float(self._call(lambda: self._redis.hget(self.prefix + "meta", "max_span_s"))
                     or 0.0)
        low = "-inf" if query.time_from is None else repr(query.time_from - span)
        high = "+inf" if query.time_to is None else repr(query.time_to)
        if query.kind is not None:
            keys = [self.prefix + "kind:" + query.kind]
        elif query.time_from is not None or query.time_to is not None:
            keys = [self.prefix + "time"]
        elif query.strip_dec_deg is not None:
            s, tol = query.strip_dec_deg, query.strip_tolerance_deg
            return self._call(lambda: self._redis.zrangebyscore(
                self.prefix + "strip", repr(s - tol), repr(s + tol)))
        else:
            return self._call(lambda: self._redis.hkeys(self.prefix + "entries"))
        pipe = self._redis.pipeline(transaction=False)
        for key in keys:
            pipe.zrangebyscore(key, low, high)
        return {i for ids in self._call(pipe.execute) for i in ids}

    def _cone_rows(self, query: SearchQuery) -> list[list[Any]]:
        """Rows of the products in the query's cone whose span overlaps its time range
        (tested on the server: SEARCH_CONE)."""
        assert query.cone is not None
        ra, dec, radius = query.cone
        reply = self._call(lambda: self._search_cone(args=[
            self.prefix, "" if query.time_from is None else repr(query.time_from),
            "" if query.time_to is None else repr(query.time_to),
            *map(repr, unit_vector(ra, dec)), repr(math.cos(math.radians(radius))),
            *cone_cells(ra, dec, radius)]))
        return json.loads(reply)

    def search(self, query: SearchQuery) -> SearchResult:
        if query.cone is not None:
            rows = self._cone_rows(query)
            test = row_test(query, cone_and_time=False)
        else:
            ids = list(self._candidates(query))
            rows = []
            for start in range(0, len(ids), FETCH_BATCH):
                part = ids[start:start + FETCH_BATCH]
                docs: list[Any] = self._call(lambda p=part: self._redis.hmget(
                    self.prefix + "entries", p))
                rows += [json.loads(d) for d in docs if d]
            test = row_test(query)
        found = [row for row in rows if test(row)]
        found.sort(key=row_order)
        return query.page(found)
