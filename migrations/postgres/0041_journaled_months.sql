-- PostgreSQL's ingest writer journals each commit's month totals with its minute increments:
-- they are derived from the minute entries of the commit's `rollup_journal` record and upserted
-- into `usage_months` by the fold (about once a second) instead of by every commit. Two
-- commits in flight no longer wait on each other's locks on the same customers' month rows,
-- and the table's indexed totals are rewritten once per fold rather than once per commit.
-- A record written before this migration had its month totals upserted at commit already;
-- `months` is 1 on the records whose month totals the fold still has to add. SQLite's writer
-- upserts the month totals at commit (one writer, no lock waits) and leaves it 0.
ALTER TABLE rollup_journal ADD COLUMN months BIGINT NOT NULL DEFAULT 0;
