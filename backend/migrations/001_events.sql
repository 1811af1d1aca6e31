-- Plate events, one row per vehicle passage (backend/schemas/event.avsc), partitioned by capture
-- time with native declarative partitioning. Partitions (one per month) are created by sink.postgres
-- before it stores a batch that needs them. The primary key must contain the partition key, so it
-- is (event_id, captured_at); an event's captured_at never changes, so this is unique on event_id.
CREATE TABLE IF NOT EXISTS events (
    event_id            uuid             NOT NULL,
    captured_at         timestamptz      NOT NULL,
    camera_id           text             NOT NULL,
    track_id            bigint,
    plate_text          text             NOT NULL,
    plate_normalized    text             NOT NULL,
    plate_confidence    double precision NOT NULL,
    plate_region        text,
    vehicle_type        text,
    vehicle_color       text,
    vehicle_make        text,
    vehicle_model       text,
    plate_url           text,
    vehicle_url         text,
    frame_url           text,
    capture_to_event_ms double precision,
    pipeline_ms         double precision,
    site                text             NOT NULL,
    host                text             NOT NULL,
    extras              jsonb            NOT NULL DEFAULT '{}',
    first_seen          timestamptz,
    last_seen           timestamptz,
    count               integer          NOT NULL DEFAULT 1,
    reads               integer          NOT NULL DEFAULT 0,
    kafka_topic         text,
    kafka_partition     integer,
    kafka_offset        bigint,
    stored_at           timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (event_id, captured_at)
) PARTITION BY RANGE (captured_at);

CREATE INDEX IF NOT EXISTS events_plate_idx ON events (plate_normalized, captured_at DESC);
CREATE INDEX IF NOT EXISTS events_camera_idx ON events (camera_id, captured_at DESC);
CREATE INDEX IF NOT EXISTS events_captured_idx ON events (captured_at DESC);
