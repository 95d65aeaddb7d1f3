-- Each ingest commit's minute rollup increments, one row per commit, written in the same
-- transaction as its events. The writer holds the increments in memory and upserts them into
-- usage_rollups in bulk, then empties this table in that transaction; after a crash the rows
-- left here are replayed on start, so an acknowledged event's rollups are never lost.
CREATE TABLE rollup_journal (
    id      INTEGER PRIMARY KEY,
    -- Events the record covers.
    events  BIGINT NOT NULL,
    -- (key, totals) entries; see usage::rollup::Deferred.
    record  BLOB NOT NULL
);
