-- Duplicates are recognised by an 8-byte key per event received within the dedup window
-- (`ingest.dedup_window`), no longer by a unique index on (source, event_id). That index took a
-- random insert per event into a B-tree as big as the store (1.0 GB at 10 M events, against
-- PostgreSQL's default 128 MB of shared buffers), and after every checkpoint each of its pages
-- was written to the WAL whole again the first time an event landed on it: with 10 M events
-- stored, ingest fell to 36k events/s from 58k on an empty store. The keys are a quarter of
-- its size and retention deletes those older than the window, so the index stops growing with
-- the store. Still decided by the database, so several instances sharing it see each other's
-- events (see usage::dedup::pg_key).
CREATE TABLE event_keys (
    -- The first eight bytes of SHA-256(source, 0xff, event_id), big-endian.
    key         BIGINT NOT NULL,
    received_at BIGINT NOT NULL
);

-- The keys of every stored event, so a retry of one received before this migration is still
-- recognised; retention then drops those older than the window. Sorted once and indexed after,
-- instead of one random insert per stored event.
INSERT INTO event_keys (key, received_at)
SELECT DISTINCT ON (key) key, received_at
FROM (
    SELECT ('x' || encode(substr(sha256(convert_to(source, 'UTF8') || '\xff'::bytea
                || convert_to(event_id, 'UTF8')), 1, 8), 'hex'))::bit(64)::bigint AS key,
           received_at
    FROM events
) AS stored
ORDER BY key, received_at DESC;
ALTER TABLE event_keys ADD PRIMARY KEY (key);
-- Keys are appended in receipt order; pruning reads the oldest by a block-range index.
CREATE INDEX event_keys_received ON event_keys USING brin (received_at);

ALTER TABLE events DROP CONSTRAINT IF EXISTS events_source_event_id_key;
