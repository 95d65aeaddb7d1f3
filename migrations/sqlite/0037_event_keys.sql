-- PostgreSQL's dedup keys (see usage::dedup::pg_key), one row per event received within the
-- dedup window. SQLite holds its window in memory and in event_dedup; this table is created so
-- that both dialects hold the same tables, and stays empty.
CREATE TABLE event_keys (
    key         BIGINT NOT NULL PRIMARY KEY,
    received_at BIGINT NOT NULL
);
