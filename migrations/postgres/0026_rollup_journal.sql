-- SQLite's rollup journal (see usage::rollup::Deferred); created here too so that both dialects
-- hold the same tables. PostgreSQL's writer upserts each commit's rollups in that commit (several
-- instances may share the database), so it stays empty.
CREATE TABLE rollup_journal (
    id      BIGSERIAL PRIMARY KEY,
    events  BIGINT NOT NULL,
    record  BYTEA NOT NULL
);
