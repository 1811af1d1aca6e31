-- Event ids that have update messages stored before their event (they travel on different
-- topics, so this happens, but rarely). sink.postgres writes an id here when it stores an update
-- whose event is not in `events` yet, and an event batch applies updates only to its events found
-- here: probing event_updates for every stored event (one index probe per event, ~17 ms per
-- batch of 5000 once event_updates is large) would cost more than the rest of the UPDATE logic.
-- Ids whose event exists are removed again by later update batches.
CREATE TABLE IF NOT EXISTS event_updates_pending (
    event_id uuid PRIMARY KEY
);

INSERT INTO event_updates_pending (event_id)
SELECT DISTINCT u.event_id FROM event_updates u
WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.event_id = u.event_id)
ON CONFLICT DO NOTHING;
