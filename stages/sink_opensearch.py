"""``sink.opensearch``: plate events from Kafka into OpenSearch for partial and fuzzy plate search.

A Kafka consumer of its own (docs/backend.md): each batch is one bulk request, documents are
created with ``_id = event_id`` (``op_type: create``; a 409 means "already stored", so a batch read
again after a crash stores nothing twice), and offsets are committed only after the bulk request
succeeded for every document.

Indices are daily, ``<index_prefix>-YYYY.MM.DD`` by capture time (UTC), configured by the index
template ``<index_prefix>``. Plate n-grams come two ways:

- analysed sub-fields of ``plate.normalized_text``: ``.edge`` (edge n-grams: prefix search, "7AB"
  finds 7ABC123) and ``.ngram`` (3-grams: infix and fuzzy search tolerant of a misread
  character), when the server has the ``analysis-common`` module (every regular distribution);
- keyword arrays computed here, ``plate.prefixes`` and ``plate.trigrams``, always: the same
  searches as term queries, on any server (the minimal test distribution has no analysis module).

Update messages carry no capture time, so their event's index is unknown: they are merged into
``<index_prefix>_updates`` (id = event_id, count/last_seen only grow), then applied to the event
document if it is found; an event stored later picks up its updates from there (a realtime mget).
Merging is read-modify-write with optimistic concurrency (``if_seq_no``), not a Painless script,
so it needs no scripting module either; a conflict fails the batch, which is retried.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from pydantic import Field

from ..backend.kafka_ingest import KafkaSink, KafkaSinkParams, Record
from ..stages import events

__all__ = ["OpenSearchSinkParams", "OpenSearchSink", "index_template", "index_name", "to_document", "plate_grams", "STAGE_TYPES"]



def plate_grams(text: str, n: int = 3) -> tuple[list[str], list[str]]:
    """Prefixes (from 2 characters) and ``n``-grams of a normalized plate, for keyword search."""
    text = text.upper()
    return [text[:i] for i in range(2, len(text) + 1)], sorted({text[i:i + n] for i in range(len(text) - n + 1)})


def index_name(prefix: str, captured_at_ms: int) -> str:
    """The daily index of an event: ``alpr-events-2026.11.23``."""
    return f"{prefix}-{datetime.fromtimestamp(captured_at_ms / 1000, tz=timezone.utc):%Y.%m.%d}"


def index_template(prefix: str, shards: int = 1, replicas: int = 0, analyzers: bool = True) -> dict[str, Any]:
    """The composable index template of the daily event indices (``analyzers``: with the n-gram
    sub-fields, which need the server's analysis-common module)."""
    keyword = {"type": "keyword"}
    template: dict[str, Any] = {
        "index_patterns": [f"{prefix}-*"],
        "template": {
            "settings": {
                "number_of_shards": shards,
                "number_of_replicas": replicas,
                "index.max_ngram_diff": 8,
                "analysis": {
                    "tokenizer": {
                        "plate_edge": {"type": "edge_ngram", "min_gram": 1, "max_gram": 12, "token_chars": ["letter", "digit"]},
                        "plate_ngram": {"type": "ngram", "min_gram": 3, "max_gram": 3, "token_chars": ["letter", "digit"]},
                    },
                    "analyzer": {
                        "plate_edge": {"type": "custom", "tokenizer": "plate_edge", "filter": ["uppercase"]},
                        "plate_ngram": {"type": "custom", "tokenizer": "plate_ngram", "filter": ["uppercase"]},
                        "plate_exact": {"type": "custom", "tokenizer": "keyword", "filter": ["uppercase"]},
                    },
                },
            },
            "mappings": {
                "dynamic_templates": [{"strings": {"match_mapping_type": "string", "mapping": keyword}}],
                "properties": {
                    "event_id": keyword,
                    "captured_at": {"type": "date", "format": "epoch_millis"},
                    "first_seen": {"type": "date", "format": "epoch_millis"},
                    "last_seen": {"type": "date", "format": "epoch_millis"},
                    "camera_id": keyword,
                    "track_id": {"type": "long"},
                    "plate": {"properties": {
                        "text": {"type": "text", "analyzer": "plate_exact"},
                        "normalized_text": {"type": "keyword", "fields": {
                            "edge": {"type": "text", "analyzer": "plate_edge", "search_analyzer": "plate_exact"},
                            "ngram": {"type": "text", "analyzer": "plate_ngram"},
                        }},
                        "prefixes": keyword,
                        "trigrams": keyword,
                        "confidence": {"type": "float"},
                        "region": keyword,
                    }},
                    "node": {"properties": {"site": keyword, "host": keyword}},
                    "count": {"type": "integer"},
                    "reads": {"type": "integer"},
                    "extras": {"type": "object", "dynamic": True},
                },
            },
        },
    }
    if not analyzers:
        settings = template["template"]["settings"]
        del settings["analysis"], settings["index.max_ngram_diff"]
        plate = template["template"]["mappings"]["properties"]["plate"]["properties"]
        plate["text"] = {"type": "text"}
        plate["normalized_text"] = keyword
    return template


def to_document(ev: dict[str, Any]) -> dict[str, Any]:
    """The document of an event: the event dict (epoch-millisecond dates) plus plate grams."""
    doc = dict(ev)
    prefixes, trigrams = plate_grams(ev["plate"]["normalized_text"])
    doc["plate"] = {**ev["plate"], "prefixes": prefixes, "trigrams": trigrams}
    return doc


class OpenSearchSinkParams(KafkaSinkParams):
    url: str = Field("http://localhost:9200", min_length=1, description="OpenSearch URL (use ${ALPR_OPENSEARCH})")
    group_id: str = Field("alpr-opensearch", min_length=1, description="consumer group of the OpenSearch store")
    index_prefix: str = Field("alpr-events", pattern=r"^[a-z0-9][a-z0-9_.-]*$", description="daily indices <prefix>-YYYY.MM.DD")
    shards: int = Field(1, ge=1, description="primary shards per daily index")
    index_replicas: int = Field(0, ge=0, description="replica shards per daily index")
    timeout_s: float = Field(30.0, gt=0, description="request timeout")
    username: str | None = Field(None, description="basic auth user")
    password: str | None = Field(None, description="basic auth password")


class OpenSearchSink(KafkaSink):
    """Index plate events and updates from Kafka in OpenSearch (bulk, id = event_id, offsets after success)."""

    type_name = "sink.opensearch"
    Params = OpenSearchSinkParams

    def setup(self) -> None:
        from opensearchpy import OpenSearch

        super().setup()
        p = self.params
        auth = (p.username, p.password or "") if p.username else None
        self.client = OpenSearch(hosts=[p.url], http_auth=auth, timeout=p.timeout_s, max_retries=0)
        self.updates_index = f"{p.index_prefix}_updates"
        self.ready = False
        for name in ("indexed", "duplicates", "updates"):
            self.ctx.count(name, 0)

    def _prepare(self) -> None:
        """Put the index template (and the updates index) once per process."""
        if self.ready:
            return
        from opensearchpy.exceptions import RequestError

        p = self.params
        try:  # regular distributions have the analysis-common module; the minimal one does not
            self.client.indices.analyze(body={"tokenizer": {"type": "ngram", "min_gram": 3, "max_gram": 3}, "text": "ABC"})
            self.analyzers = True
        except RequestError:
            self.analyzers = False
            self.log.warning("OpenSearch has no n-gram tokenizer (analysis-common module): indexing plate.prefixes "
                             "and plate.trigrams only")
        self.client.indices.put_index_template(
            name=p.index_prefix, body=index_template(p.index_prefix, p.shards, p.index_replicas, self.analyzers))
        if not self.client.indices.exists(index=self.updates_index):
            self.client.indices.create(index=self.updates_index, body={
                "settings": {"number_of_shards": 1, "number_of_replicas": p.index_replicas},
                "mappings": {"properties": {"count": {"type": "integer"}, "last_seen": {"type": "date", "format": "epoch_millis"}}},
            }, ignore=400)  # 400: created meanwhile by another replica
        self.ready = True

    def _bulk(self, lines: list[dict[str, Any]], ok_statuses: tuple[int, ...] = ()) -> list[dict[str, Any]]:
        """One bulk request; raises unless every item succeeded (or has a status in ``ok_statuses``)."""
        reply = self.client.bulk(body=lines)
        items = [next(iter(item.values())) for item in reply["items"]]
        bad = [i for i in items if i.get("status", 500) >= 300 and i.get("status") not in ok_statuses]
        if bad:
            raise RuntimeError(f"bulk: {len(bad)} of {len(items)} items failed, first: {bad[0].get('error')}")
        return items

    def store(self, records: list[Record]) -> None:
        self._prepare()
        evs = [r.record for r in records if r.name == events.EVENT]
        ups = [r.record for r in records if r.name == events.UPDATE]
        if evs:
            self._store_events(evs)
        if ups:
            self._store_updates(ups)

    def _store_events(self, evs: list[dict[str, Any]]) -> None:
        ids = list({e["event_id"] for e in evs})
        known = self.client.mget(index=self.updates_index, body={"ids": ids}, _source=["count", "last_seen"])
        updates = {d["_id"]: d["_source"] for d in known["docs"] if d.get("found")}
        lines: list[dict[str, Any]] = []
        for ev in evs:
            doc = to_document(ev)
            up = updates.get(ev["event_id"])
            if up:  # an update that came before its event
                doc["count"] = max(doc.get("count") or 1, up["count"])
                doc["last_seen"] = max(doc.get("last_seen") or 0, up["last_seen"])
            lines.append({"create": {"_index": index_name(self.params.index_prefix, ev["captured_at"]), "_id": ev["event_id"]}})
            lines.append(doc)
        items = self._bulk(lines, ok_statuses=(409,))
        created = sum(1 for i in items if i.get("status") == 201)
        self.ctx.count("indexed", created)
        self.ctx.count("duplicates", len(items) - created)

    def _merge(self, index_of: dict[str, str], latest: dict[str, dict[str, int]], upsert: bool) -> None:
        """Raise count/last_seen of these documents to ``latest`` (read, compare, write with
        ``if_seq_no``: a concurrent writer makes the bulk fail and the batch is retried)."""
        docs: list[dict[str, Any]] = []
        for index in set(index_of.values()):
            ids = [i for i, x in index_of.items() if x == index]
            docs.extend(self.client.mget(index=index, body={"ids": ids}, _source=["count", "last_seen"])["docs"])
        lines: list[dict[str, Any]] = []
        for d in docs:
            want = latest[d["_id"]]
            if not d.get("found"):
                if upsert:
                    lines += [{"create": {"_index": d["_index"], "_id": d["_id"]}}, dict(want)]
                continue
            have = d["_source"]
            merged = {"count": max(have.get("count") or 0, want["count"]),
                      "last_seen": max(have.get("last_seen") or 0, want["last_seen"])}
            if merged != {"count": have.get("count"), "last_seen": have.get("last_seen")}:
                lines += [{"update": {"_index": d["_index"], "_id": d["_id"], "if_seq_no": d["_seq_no"],
                                      "if_primary_term": d["_primary_term"]}}, {"doc": merged}]
        if lines:
            self._bulk(lines)

    def _store_updates(self, ups: list[dict[str, Any]]) -> None:
        latest: dict[str, dict[str, int]] = {}
        for u in ups:
            cur = latest.setdefault(u["event_id"], {"count": 0, "last_seen": 0})
            cur["count"] = max(cur["count"], u["count"])
            cur["last_seen"] = max(cur["last_seen"], u["last_seen"])
        self._merge({i: self.updates_index for i in latest}, latest, upsert=True)
        # events of this or earlier batches must be visible to the search that finds their index
        self.client.indices.refresh(index=f"{self.params.index_prefix}-*")
        found = self.client.search(index=f"{self.params.index_prefix}-*", body={
            "size": len(latest), "_source": False, "query": {"ids": {"values": list(latest)}}})
        self._merge({h["_id"]: h["_index"] for h in found["hits"]["hits"]}, latest, upsert=False)
        self.ctx.count("updates", len(ups))

    def teardown(self) -> None:
        super().teardown()
        client = getattr(self, "client", None)
        if client is not None:
            client.close()


STAGE_TYPES = [OpenSearchSink]
