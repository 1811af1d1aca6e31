-- Update messages (backend/schemas/event_update.avsc), kept so that an update that arrives before
-- its event (they travel on different topics) is applied when the event is stored. count and
-- last_seen are absolute, so applying the same update twice changes nothing.
CREATE TABLE IF NOT EXISTS event_updates (
    event_id        uuid        NOT NULL,
    count           integer     NOT NULL,
    last_seen       timestamptz NOT NULL,
    reason          text        NOT NULL,
    camera_id       text        NOT NULL,
    track_id        bigint,
    normalized_text text,
    similarity      double precision,
    stored_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (event_id, count, last_seen)
);
