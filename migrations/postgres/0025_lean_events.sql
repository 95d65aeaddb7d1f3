-- PostgreSQL keeps its unique index on (source, event_id): several instances may share this
-- database, and only the database sees all their inserts. event_dedup is SQLite's dedup
-- window (see usage::dedup), created here too so that both dialects hold the same tables; it
-- stays empty.
CREATE TABLE event_dedup (
    received_at BIGINT NOT NULL,
    -- The commit's keys, eight little-endian bytes each.
    keys        BYTEA NOT NULL
);
-- Retention now deletes in receipt order along the primary key, so nothing reads by time.
DROP INDEX events_time;
