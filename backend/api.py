"""The query API: plate events from PostgreSQL, search from OpenSearch, crops from MinIO/S3.

Served by ``alpr-topo api``; docs/api.md lists every route with examples. Why this shape:

- **PostgreSQL answers lookups** (by id, plate, camera, time range, recent events): the table
  of ``sink.postgres`` (``backend/migrations``) has indexes for exactly these, and keyset
  pagination on ``(captured_at, event_id)`` stays fast at any depth. Fuzzy plate lookups use
  ``pg_trgm`` similarity when the extension exists, else OpenSearch's fuzzy query.
- **OpenSearch answers full-text and faceted search** over the daily indices of
  ``sink.opensearch`` (``plate.normalized_text`` with ``.edge`` and ``.ngram`` sub-fields), with
  facets by camera, hour of day and day.
- **Crops go through the API** (``/events/{id}/plate.jpg``), so clients need no S3 credentials:
  ``s3://bucket/key`` URLs are read with the API's own client, relative or ``file://`` paths from
  ``image_root`` (never outside it).
- **Auth is a bearer token per route**: ``public`` names the routes open without it (by default
  only ``health`` and ``openapi``), so a site can open read routes and keep search or crops closed.

Endpoints are plain ``def`` functions: Starlette runs them in its thread pool, and the blocking
psycopg / opensearch-py / minio clients then never stall the event loop.
"""

from __future__ import annotations

import base64
import hmac
import json
import os
import queue
import threading
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Iterator, TypeVar
from urllib.parse import unquote, urlparse

import click
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..stages import events as ev_helpers

__all__ = ["ApiConfig", "ApiError", "create_app", "api_command", "row_to_event", "ROUTES", "openapi_schema"]

EVENT_FIELDS = (
    "event_id", "captured_at", "camera_id", "track_id", "plate_text", "plate_normalized", "plate_confidence",
    "plate_region", "vehicle_type", "vehicle_color", "vehicle_make", "vehicle_model", "plate_url", "vehicle_url",
    "frame_url", "capture_to_event_ms", "pipeline_ms", "site", "host", "extras", "first_seen", "last_seen",
    "count", "reads",
)
_SELECT = ", ".join(EVENT_FIELDS)
MAX_LIMIT = 1000


@dataclass
class ApiConfig:
    """Where the stores are and who may read. Empty ``postgres_dsn`` / ``opensearch_url`` turn
    the routes that need them into 503 answers (so the API still starts with one store down)."""

    postgres_dsn: str = ""
    db_schema: str = "public"
    opensearch_url: str = ""
    index_prefix: str = "alpr-events"
    s3_endpoint: str = ""
    s3_access_key: str = ""
    s3_secret_key: str = ""
    s3_region: str | None = None
    image_root: str | None = None
    token: str | None = None
    public: frozenset[str] = frozenset({"health", "openapi"})
    pool_size: int = 4
    fuzzy_threshold: float = 0.3

    @classmethod
    def from_env(cls, **overrides: Any) -> "ApiConfig":
        """Defaults from the variables of ``alpr-topo services env`` (ALPR_POSTGRES_DSN, ...)."""
        env = os.environ
        base: dict[str, Any] = dict(
            postgres_dsn=env.get("ALPR_POSTGRES_DSN", ""), opensearch_url=env.get("ALPR_OPENSEARCH", ""),
            s3_endpoint=env.get("ALPR_S3_ENDPOINT", ""), s3_access_key=env.get("ALPR_S3_ACCESS_KEY", ""),
            s3_secret_key=env.get("ALPR_S3_SECRET_KEY", ""), token=env.get("ALPR_API_TOKEN") or None,
            image_root=env.get("ALPR_IMAGE_ROOT") or None,
        )
        base.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**base)


class ApiError(Exception):
    """An answer other than 200, with a JSON body ``{"error": message}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# -- stores ---------------------------------------------------------------------------------------


class _PgPool:
    """A few autocommit connections reused across requests (a new connection costs more than a
    plate lookup); a broken connection is dropped instead of returned."""

    def __init__(self, dsn: str, db_schema: str, size: int) -> None:
        self.dsn = dsn
        self.db_schema = db_schema
        self.idle: queue.LifoQueue[Any] = queue.LifoQueue(maxsize=size)
        self.trgm: bool | None = None

    @contextmanager
    def connection(self) -> Iterator[Any]:
        import psycopg

        if not self.dsn:
            raise ApiError(503, "PostgreSQL is not configured (--postgres-dsn or ALPR_POSTGRES_DSN)")
        try:
            conn = self.idle.get_nowait()
        except queue.Empty:
            try:
                conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=5)
                conn.execute(f"SET search_path TO {self.db_schema}, public")
            except psycopg.OperationalError as exc:
                raise ApiError(503, f"PostgreSQL unavailable: {str(exc).strip()}") from exc
        ok = False
        try:
            yield conn
            ok = True
        except psycopg.errors.UndefinedTable as exc:
            ok = True
            raise ApiError(503, "no events table yet (sink.postgres creates it on first start)") from exc
        except psycopg.OperationalError as exc:
            raise ApiError(503, f"PostgreSQL unavailable: {str(exc).strip()}") from exc
        finally:
            if ok and not conn.closed:
                try:
                    self.idle.put_nowait(conn)
                except queue.Full:
                    conn.close()
            else:
                conn.close()

    def has_trgm(self, conn: Any) -> bool:
        """pg_trgm present (created here when allowed); checked once."""
        if self.trgm is None:
            try:
                conn.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
            except Exception:
                pass
            self.trgm = conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm'").fetchone() is not None
        return self.trgm

    def close(self) -> None:
        while True:
            try:
                self.idle.get_nowait().close()
            except queue.Empty:
                return


def _ms(value: Any) -> int | None:
    if value is None:
        return None
    return int(value.timestamp() * 1000) if isinstance(value, datetime) else int(value)


def row_to_event(row: tuple[Any, ...]) -> dict[str, Any]:
    """An ``events`` row (columns :data:`EVENT_FIELDS`) as an event dict (int ms times)."""
    r = dict(zip(EVENT_FIELDS, row))
    extras = r["extras"]
    if isinstance(extras, str):
        extras = json.loads(extras)
    return {
        "event_id": str(r["event_id"]), "captured_at": _ms(r["captured_at"]), "camera_id": r["camera_id"],
        "track_id": r["track_id"],
        "plate": {"text": r["plate_text"], "normalized_text": r["plate_normalized"],
                  "confidence": r["plate_confidence"], "region": r["plate_region"]},
        "vehicle": {"type": r["vehicle_type"], "color": r["vehicle_color"], "make": r["vehicle_make"],
                    "model": r["vehicle_model"]},
        "images": {"plate_url": r["plate_url"], "vehicle_url": r["vehicle_url"], "frame_url": r["frame_url"]},
        "latency": {"capture_to_event_ms": r["capture_to_event_ms"], "pipeline_ms": r["pipeline_ms"]},
        "node": {"site": r["site"], "host": r["host"]},
        "extras": extras or {},
        "first_seen": _ms(r["first_seen"]), "last_seen": _ms(r["last_seen"]),
        "count": r["count"], "reads": r["reads"],
    }


def _out(event: dict[str, Any]) -> dict[str, Any]:
    """The JSON form of docs/events.md (ISO-8601 times), what every route returns."""
    return ev_helpers.to_json_obj(event)


# -- request parsing ------------------------------------------------------------------------------


def _time_param(request: Request, name: str) -> datetime | None:
    """ISO-8601 with a zone (``2024-05-01T12:00:00Z``) or epoch milliseconds."""
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    try:
        ms = int(raw) if raw.lstrip("-").isdigit() else ev_helpers.iso_to_millis(raw)
    except ValueError as exc:
        raise ApiError(400, f"{name}: {raw!r} is not an ISO-8601 time with a zone or epoch milliseconds") from exc
    return datetime.fromtimestamp(ms / 1000, timezone.utc)


N = TypeVar("N", int, float)


def _number_param(request: Request, name: str, default: N, lo: N, hi: N, kind: Callable[[str], N] = int) -> N:
    """Query parameter ``name`` as ``kind`` (int or float) within ``lo..hi``; 400 otherwise."""
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = kind(raw)
    except ValueError as exc:
        raise ApiError(400, f"{name}: {raw!r} is not {'an integer' if kind is int else 'a number'}") from exc
    if not lo <= value <= hi:
        raise ApiError(400, f"{name}: {value} is outside {lo}..{hi}")
    return value


def _bool_param(request: Request, name: str) -> bool:
    return request.query_params.get(name, "").lower() in ("1", "true", "yes", "on")


def encode_cursor(captured_at_ms: int, event_id: str) -> str:
    """Opaque keyset cursor: the last row's (captured_at, event_id)."""
    return base64.urlsafe_b64encode(f"{captured_at_ms}:{event_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        ms, event_id = raw.split(":", 1)
        return datetime.fromtimestamp(int(ms) / 1000, timezone.utc), str(__import__("uuid").UUID(event_id))
    except Exception as exc:
        raise ApiError(400, "cursor: not a cursor of this API (use next_cursor of the previous page)") from exc


# -- the app --------------------------------------------------------------------------------------


@dataclass
class _Spec:
    """One route: path, name (for auth config and OpenAPI), summary and query parameters."""

    path: str
    name: str
    summary: str
    params: list[tuple[str, str, str]] = field(default_factory=list)  # (name, type, description)
    path_params: list[str] = field(default_factory=list)
    binary: bool = False


PAGE = [("limit", "integer", f"page size, 1..{MAX_LIMIT} (default 50)")]
TIME = [("since", "string", "from this capture time (ISO-8601 with zone, or epoch ms), inclusive"),
        ("until", "string", "up to this capture time, exclusive")]
ROUTES = [
    _Spec("/health", "health", "Liveness and the state of each store"),
    _Spec("/stats", "stats", "Event counts: total, last hour, per camera", TIME),
    _Spec("/events", "events", "Recent events, newest first; filter by camera and time range (keyset pagination)",
          [("camera", "string", "camera_id"), ("site", "string", "node.site"), *TIME, *PAGE,
           ("cursor", "string", "next_cursor of the previous page")]),
    _Spec("/events/{event_id}", "event", "One event by id", path_params=["event_id"]),
    _Spec("/events/{event_id}/plate.jpg", "crop", "The plate crop (JPEG) of an event", path_params=["event_id"],
          binary=True),
    _Spec("/plates/{plate}", "plate", "Events of a plate: exact (keyset pages) or fuzzy (pg_trgm or OpenSearch)",
          [("fuzzy", "boolean", "similar plates too"),
           ("threshold", "number", "fuzzy: pg_trgm similarity 0..1 (default 0.3)"),
           ("source", "string", "fuzzy: postgres (default when pg_trgm exists) or opensearch"),
           ("camera", "string", "camera_id"), *TIME, *PAGE, ("cursor", "string", "exact: next_cursor"),
           ("offset", "integer", "fuzzy: rows to skip")], path_params=["plate"]),
    _Spec("/search", "search", "Full-text / partial plate search with facets (camera, hour of day, day) via OpenSearch",
          [("q", "string", "plate fragment or words (plate, camera, site, vehicle)"),
           ("fuzzy", "boolean", "tolerate misread characters"), ("camera", "string", "camera_id filter"),
           ("site", "string", "node.site filter"), *TIME, *PAGE, ("offset", "integer", "hits to skip")]),
    _Spec("/openapi.json", "openapi", "This OpenAPI document"),
]


def openapi_schema(config: ApiConfig) -> dict[str, Any]:
    """A hand-written OpenAPI 3.0 document built from :data:`ROUTES` (no decorators, no magic)."""
    paths: dict[str, Any] = {}
    for spec in ROUTES:
        params = [{"name": p, "in": "path", "required": True, "schema": {"type": "string"}} for p in spec.path_params]
        params += [{"name": n, "in": "query", "required": False, "description": d, "schema": {"type": t}}
                   for n, t, d in spec.params]
        content = ({"image/jpeg": {"schema": {"type": "string", "format": "binary"}}} if spec.binary
                   else {"application/json": {"schema": {"$ref": "#/components/schemas/Page"}
                                              if spec.name in ("events", "plate", "search")
                                              else {"$ref": "#/components/schemas/Event"} if spec.name == "event"
                                              else {"type": "object"}}})
        responses: dict[str, Any] = {"200": {"description": "OK", "content": content},
                                     "400": {"description": "bad parameter", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}}
        if spec.path_params:
            responses["404"] = {"description": "not found", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
        op: dict[str, Any] = {"operationId": spec.name, "summary": spec.summary, "parameters": params, "responses": responses}
        if config.token and spec.name not in config.public:
            op["security"] = [{"bearer": []}]
            responses["401"] = {"description": "missing or wrong bearer token"}
        paths[spec.path] = {"get": op}
    return {
        "openapi": "3.0.3",
        "info": {"title": "alpr-topo query API", "version": "1", "description": "Plate events, search and crops (docs/api.md)"},
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Event": {"type": "object", "description": "An event in the JSON form of docs/events.md",
                          "properties": {"event_id": {"type": "string", "format": "uuid"},
                                         "captured_at": {"type": "string", "format": "date-time"},
                                         "camera_id": {"type": "string"}, "plate": {"type": "object"}}},
                "Page": {"type": "object", "properties": {
                    "events": {"type": "array", "items": {"$ref": "#/components/schemas/Event"}},
                    "next_cursor": {"type": "string", "nullable": True},
                    "next_offset": {"type": "integer", "nullable": True},
                    "total": {"type": "integer"}, "facets": {"type": "object"}}},
                "Error": {"type": "object", "properties": {"error": {"type": "string"}}},
            },
        },
    }


class _Api:
    """The route handlers over one config; one instance per app."""

    def __init__(self, config: ApiConfig) -> None:
        self.config = config
        self.pg = _PgPool(config.postgres_dsn, config.db_schema, config.pool_size)
        self._os: Any = None
        self._s3: Any = None
        self._lock = threading.Lock()

    # -- clients ---------------------------------------------------------------------------------

    def opensearch(self) -> Any:
        if not self.config.opensearch_url:
            raise ApiError(503, "OpenSearch is not configured (--opensearch-url or ALPR_OPENSEARCH)")
        with self._lock:
            if self._os is None:
                from opensearchpy import OpenSearch

                self._os = OpenSearch(hosts=[self.config.opensearch_url], timeout=10, max_retries=0)
        return self._os

    def s3(self) -> Any:
        if not self.config.s3_endpoint:
            raise ApiError(503, "no object store configured (--s3-endpoint or ALPR_S3_ENDPOINT)")
        with self._lock:
            if self._s3 is None:
                from .objectstore import make_client

                self._s3 = make_client(self.config.s3_endpoint, self.config.s3_access_key, self.config.s3_secret_key,
                                       region=self.config.s3_region)
        return self._s3

    def _search(self, body: dict[str, Any]) -> dict[str, Any]:
        from opensearchpy.exceptions import ConnectionError as OsConnectionError, TransportError

        try:
            return self.opensearch().search(index=f"{self.config.index_prefix}-*", body=body,
                                            params={"ignore_unavailable": "true", "allow_no_indices": "true"})
        except OsConnectionError as exc:
            raise ApiError(503, f"OpenSearch unavailable: {exc}") from exc
        except TransportError as exc:
            raise ApiError(400 if exc.status_code == 400 else 502, f"OpenSearch: {exc.error}") from exc

    # -- routes ----------------------------------------------------------------------------------

    def health(self, request: Request) -> dict[str, Any]:
        stores: dict[str, Any] = {}
        if self.config.postgres_dsn:
            try:
                with self.pg.connection() as conn:
                    conn.execute("SELECT 1")
                stores["postgres"] = "ok"
            except ApiError as exc:
                stores["postgres"] = exc.message
        if self.config.opensearch_url:
            try:
                stores["opensearch"] = "ok" if self.opensearch().ping() else "unreachable"
            except ApiError as exc:
                stores["opensearch"] = exc.message
        if self.config.s3_endpoint:
            try:
                self.s3().list_buckets()
                stores["s3"] = "ok"
            except Exception as exc:  # noqa: BLE001  (any client error means "not usable")
                stores["s3"] = f"unreachable: {exc}"
        return {"status": "ok" if all(v == "ok" for v in stores.values()) else "degraded", "stores": stores}

    def stats(self, request: Request) -> dict[str, Any]:
        where, args = self._filters(request)
        with self.pg.connection() as conn:
            total, first, last = conn.execute(
                f"SELECT count(*), min(captured_at), max(captured_at) FROM events {where}", args).fetchone()
            per_camera = conn.execute(
                f"SELECT camera_id, count(*), max(captured_at) FROM events {where} GROUP BY camera_id ORDER BY 2 DESC", args).fetchall()
            last_hour = conn.execute(
                "SELECT count(*) FROM events WHERE captured_at >= now() - interval '1 hour'").fetchone()[0]
        iso = lambda d: None if d is None else ev_helpers.millis_to_iso(_ms(d))  # noqa: E731
        return {"events": total, "first_event_at": iso(first), "last_event_at": iso(last), "events_last_hour": last_hour,
                "cameras": [{"camera_id": c, "events": n, "last_event_at": iso(t)} for c, n, t in per_camera]}

    def _filters(self, request: Request, plate: str | None = None) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        args: list[Any] = []
        if plate is not None:
            clauses.append("plate_normalized = %s")
            args.append(plate)
        for param, column in (("camera", "camera_id"), ("site", "site")):
            value = request.query_params.get(param)
            if value:
                clauses.append(f"{column} = %s")
                args.append(value)
        since, until = _time_param(request, "since"), _time_param(request, "until")
        if since is not None:
            clauses.append("captured_at >= %s")
            args.append(since)
        if until is not None:
            clauses.append("captured_at < %s")
            args.append(until)
        return ("WHERE " + " AND ".join(clauses)) if clauses else "", args

    def _keyset_page(self, request: Request, plate: str | None = None) -> dict[str, Any]:
        limit = _number_param(request, "limit", 50, 1, MAX_LIMIT)
        where, args = self._filters(request, plate)
        cursor = request.query_params.get("cursor")
        if cursor:
            at, event_id = decode_cursor(cursor)
            where += (" AND " if where else "WHERE ") + "(captured_at, event_id) < (%s, %s::uuid)"
            args += [at, event_id]
        with self.pg.connection() as conn:
            rows = conn.execute(f"SELECT {_SELECT} FROM events {where} ORDER BY captured_at DESC, event_id DESC LIMIT %s",
                                [*args, limit + 1]).fetchall()
        found = [row_to_event(r) for r in rows[:limit]]
        nxt = encode_cursor(found[-1]["captured_at"], found[-1]["event_id"]) if len(rows) > limit else None
        return {"events": [_out(e) for e in found], "next_cursor": nxt}

    def events(self, request: Request) -> dict[str, Any]:
        return self._keyset_page(request)

    def event(self, request: Request) -> dict[str, Any]:
        return _out(self._event_by_id(request.path_params["event_id"]))

    def _event_by_id(self, event_id: str) -> dict[str, Any]:
        import uuid

        try:
            event_id = str(uuid.UUID(event_id))
        except ValueError as exc:
            raise ApiError(400, f"event_id: {event_id!r} is not a UUID") from exc
        with self.pg.connection() as conn:
            row = conn.execute(f"SELECT {_SELECT} FROM events WHERE event_id = %s", (event_id,)).fetchone()
        if row is None:
            raise ApiError(404, f"no event {event_id}")
        return row_to_event(row)

    def plate(self, request: Request) -> dict[str, Any]:
        from .alerts import normalize_plate

        plate = normalize_plate(request.path_params["plate"])
        if not plate:
            raise ApiError(400, "plate: needs letters or digits")
        if not _bool_param(request, "fuzzy"):
            return {"plate": plate, **self._keyset_page(request, plate)}
        limit = _number_param(request, "limit", 50, 1, MAX_LIMIT)
        offset = _number_param(request, "offset", 0, 0, 100_000)
        threshold = _number_param(request, "threshold", self.config.fuzzy_threshold, 0.0, 1.0, float)
        source = request.query_params.get("source") or ""
        if source not in ("", "postgres", "opensearch"):
            raise ApiError(400, f"source: {source!r} is not postgres or opensearch")
        use_pg = source == "postgres"
        if source == "":
            with self.pg.connection() as conn:
                use_pg = self.pg.has_trgm(conn)
        if use_pg:
            where, args = self._filters(request)
            with self.pg.connection() as conn:
                if not self.pg.has_trgm(conn):
                    raise ApiError(503, "pg_trgm is not installed in PostgreSQL: use source=opensearch")
                cond = (where + " AND " if where else "WHERE ") + "similarity(plate_normalized, %s) >= %s"
                rows = conn.execute(
                    f"SELECT {_SELECT}, similarity(plate_normalized, %s) AS score FROM events {cond}"
                    " ORDER BY score DESC, captured_at DESC, event_id DESC LIMIT %s OFFSET %s",
                    [plate, *args, plate, threshold, limit + 1, offset]).fetchall()
            page = [({**_out(row_to_event(r[:-1])), "score": round(float(r[-1]), 3)}) for r in rows[:limit]]
            return {"plate": plate, "source": "postgres", "events": page,
                    "next_offset": offset + limit if len(rows) > limit else None}
        body = {"query": {"bool": {"should": [
                    {"term": {"plate.normalized_text": {"value": plate, "boost": 20}}},
                    {"fuzzy": {"plate.normalized_text": {"value": plate, "fuzziness": "AUTO"}}},
                    {"match": {"plate.normalized_text.ngram": {"query": plate, "minimum_should_match": "60%"}}}],
                    "minimum_should_match": 1, "filter": self._os_filters(request)}},
                "sort": ["_score", {"captured_at": "desc"}], "from": offset, "size": limit + 1}
        hits = self._search(body)["hits"]["hits"]
        page = [{**_out(h["_source"]), "score": round(float(h["_score"] or 0), 3)} for h in hits[:limit]]
        return {"plate": plate, "source": "opensearch", "events": page,
                "next_offset": offset + limit if len(hits) > limit else None}

    def _os_filters(self, request: Request) -> list[dict[str, Any]]:
        filters: list[dict[str, Any]] = []
        if request.query_params.get("camera"):
            filters.append({"term": {"camera_id": request.query_params["camera"]}})
        if request.query_params.get("site"):
            filters.append({"term": {"node.site": request.query_params["site"]}})
        since, until = _time_param(request, "since"), _time_param(request, "until")
        if since or until:
            rng: dict[str, Any] = {"format": "epoch_millis"}
            if since:
                rng["gte"] = _ms(since)
            if until:
                rng["lt"] = _ms(until)
            filters.append({"range": {"captured_at": rng}})
        return filters

    def search(self, request: Request) -> dict[str, Any]:
        limit = _number_param(request, "limit", 50, 1, MAX_LIMIT)
        offset = _number_param(request, "offset", 0, 0, 10_000 - MAX_LIMIT)
        q = (request.query_params.get("q") or "").strip()
        must: list[dict[str, Any]] = []
        if q:
            from .alerts import normalize_plate

            plate = normalize_plate(q)
            should: list[dict[str, Any]] = [
                {"multi_match": {"query": q, "fields": ["camera_id", "node.site", "node.host", "vehicle.*", "plate.region"]}},
            ]
            if plate:
                # n-gram sub-fields when the template could create them (they need OpenSearch's
                # analysis-common module); wildcard on the keyword works everywhere, slower
                should += [{"term": {"plate.normalized_text": {"value": plate, "boost": 5}}},
                           {"prefix": {"plate.normalized_text": {"value": plate, "boost": 3}}},
                           {"wildcard": {"plate.normalized_text": {"value": f"*{plate}*", "boost": 1}}},
                           {"match": {"plate.normalized_text.edge": {"query": plate, "boost": 2}}},
                           {"match": {"plate.normalized_text.ngram": {"query": plate, "minimum_should_match": "75%"}}}]
                if _bool_param(request, "fuzzy"):
                    should.append({"fuzzy": {"plate.normalized_text": {"value": plate, "fuzziness": "AUTO"}}})
            must.append({"bool": {"should": should, "minimum_should_match": 1}})
        body = {
            "query": {"bool": {"must": must or [{"match_all": {}}], "filter": self._os_filters(request)}},
            "sort": (["_score"] if q else []) + [{"captured_at": "desc"}],
            "from": offset, "size": limit, "track_total_hits": True,
            "aggs": {"camera": {"terms": {"field": "camera_id", "size": 50}},
                     "day": {"date_histogram": {"field": "captured_at", "calendar_interval": "day", "format": "yyyy-MM-dd",
                                                "min_doc_count": 1}},
                     "hour": {"date_histogram": {"field": "captured_at", "fixed_interval": "1h", "min_doc_count": 1}}},
        }
        res = self._search(body)
        total = res["hits"]["total"]["value"] if isinstance(res["hits"]["total"], dict) else res["hits"]["total"]
        aggs = res.get("aggregations") or {}
        hour_of_day = [0] * 24  # UTC hours, summed from the hourly histogram (no scripts needed)
        for b in (aggs.get("hour") or {}).get("buckets", []):
            hour_of_day[datetime.fromtimestamp(b["key"] / 1000, timezone.utc).hour] += b["doc_count"]
        facets = {
            "camera": [{"value": b["key"], "count": b["doc_count"]} for b in (aggs.get("camera") or {}).get("buckets", [])],
            "day": [{"value": b["key_as_string"], "count": b["doc_count"]} for b in (aggs.get("day") or {}).get("buckets", [])],
            "hour": [{"value": h, "count": n} for h, n in enumerate(hour_of_day) if n],
        }
        hits = res["hits"]["hits"]
        return {"q": q, "total": total, "events": [_out(h["_source"]) for h in hits], "facets": facets,
                "next_offset": offset + limit if offset + len(hits) < total else None}

    def crop(self, request: Request) -> Response:
        event = self._event_by_id(request.path_params["event_id"])
        url = (event.get("images") or {}).get("plate_url")
        if not url:
            raise ApiError(404, "this event has no plate crop")
        if url.startswith("s3://") or (url.startswith(("http://", "https://")) and self.config.s3_endpoint):
            from .objectstore import fetch

            try:
                data = fetch(self.s3(), url)
            except ValueError as exc:
                raise ApiError(404, str(exc)) from exc
            except Exception as exc:  # noqa: BLE001
                code = getattr(exc, "code", "")
                if code in ("NoSuchKey", "NoSuchBucket"):
                    raise ApiError(404, f"crop not stored (yet): {url}") from exc
                raise ApiError(502, f"object store: {exc}") from exc
        else:
            data = self._local_file(url)
        return Response(data, media_type="image/jpeg",
                        headers={"Cache-Control": "private, max-age=86400",
                                 "Content-Disposition": f'inline; filename="{event["event_id"]}-plate.jpg"'})

    def _local_file(self, url: str) -> bytes:
        if not self.config.image_root:
            raise ApiError(404, f"crop {url!r} is a local file and no --image-root is configured")
        root = Path(self.config.image_root).resolve()
        parts = urlparse(url)
        path = Path(unquote(parts.path)) if parts.scheme == "file" else root / url
        path = path.resolve()
        if root not in path.parents:
            raise ApiError(403, "crop path is outside the image root")
        try:
            return path.read_bytes()
        except OSError as exc:
            raise ApiError(404, f"crop file missing: {url}") from exc

    def openapi(self, request: Request) -> dict[str, Any]:
        return openapi_schema(self.config)


def create_app(config: ApiConfig | None = None) -> Starlette:
    """The Starlette app; ``app.state.api`` holds the handlers (and their clients)."""
    config = config or ApiConfig.from_env()
    api = _Api(config)

    def endpoint(spec: _Spec) -> Callable[[Request], Response]:
        handler = getattr(api, spec.name)
        protected = bool(config.token) and spec.name not in config.public

        def run(request: Request) -> Response:
            if protected:
                header = request.headers.get("authorization", "")
                scheme, _, given = header.partition(" ")
                if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), str(config.token).encode()):
                    return JSONResponse({"error": "missing or wrong bearer token"}, status_code=401,
                                        headers={"WWW-Authenticate": "Bearer"})
            try:
                result = handler(request)
            except ApiError as exc:
                return JSONResponse({"error": exc.message}, status_code=exc.status)
            return result if isinstance(result, Response) else JSONResponse(result)

        return run

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        api.pg.close()

    app = Starlette(routes=[Route(s.path, endpoint(s), methods=["GET"], name=s.name) for s in ROUTES],
                    lifespan=lifespan)
    app.state.api = api
    return app


@click.command("api")
@click.option("--host", default="127.0.0.1", show_default=True, help="address to listen on")
@click.option("--port", default=8490, show_default=True, type=int)
@click.option("--token", envvar="ALPR_API_TOKEN", help="bearer token for every route not in --public (default: no auth)")
@click.option("--public", "public", multiple=True, metavar="ROUTE",
              help="route open without the token (repeatable; default: health, openapi). Names: "
                   + ", ".join(s.name for s in ROUTES))
@click.option("--postgres-dsn", envvar="ALPR_POSTGRES_DSN", help="PostgreSQL of sink.postgres")
@click.option("--db-schema", default="public", show_default=True, help="PostgreSQL schema of the events table")
@click.option("--opensearch-url", envvar="ALPR_OPENSEARCH", help="OpenSearch of sink.opensearch")
@click.option("--index-prefix", default="alpr-events", show_default=True, help="daily indices PREFIX-YYYY.MM.DD")
@click.option("--s3-endpoint", envvar="ALPR_S3_ENDPOINT", help="MinIO/S3 holding the crops (s3:// URLs)")
@click.option("--s3-access-key", envvar="ALPR_S3_ACCESS_KEY")
@click.option("--s3-secret-key", envvar="ALPR_S3_SECRET_KEY")
@click.option("--image-root", envvar="ALPR_IMAGE_ROOT", type=click.Path(file_okay=False),
              help="folder of crops stored as local files (publish.local)")
def api_command(host: str, port: int, token: str | None, public: tuple[str, ...], postgres_dsn: str | None,
                db_schema: str, opensearch_url: str | None, index_prefix: str, s3_endpoint: str | None,
                s3_access_key: str | None, s3_secret_key: str | None, image_root: str | None) -> None:
    """Serve the query API (events, plates, search, crops; OpenAPI at /openapi.json)."""
    import uvicorn

    names = {s.name for s in ROUTES}
    unknown = [p for p in public if p not in names]
    if unknown:
        raise click.BadParameter(f"unknown route {', '.join(unknown)}; routes: {', '.join(sorted(names))}", param_hint="--public")
    config = ApiConfig(postgres_dsn=postgres_dsn or "", db_schema=db_schema, opensearch_url=opensearch_url or "",
                       index_prefix=index_prefix, s3_endpoint=s3_endpoint or "", s3_access_key=s3_access_key or "",
                       s3_secret_key=s3_secret_key or "", image_root=image_root, token=token or None,
                       public=frozenset(public) if public else ApiConfig.public)
    click.echo(f"query API on http://{host}:{port} (OpenAPI: /openapi.json; auth: {'bearer token' if token else 'none'})", err=True)
    uvicorn.run(create_app(config), host=host, port=port, log_level="warning")
