-- Storage settings for the ingest path's hot tables, measured with `cargo bench --bench ingest`.

-- Every ingest commit adds to the same recent rollup and month rows. With free room on each
-- page PostgreSQL updates them in place (heap-only tuples: no new index entries, since only
-- counter columns change); full pages made each update a new index entry, and a 1,500-row
-- upsert slowed from 10 ms to 20-35 ms as the indexes bloated.
ALTER TABLE usage_rollups SET (fillfactor = 70);
ALTER TABLE usage_months SET (fillfactor = 70);

-- Only retention pruning reads events by `time`, and events arrive roughly in time order: a
-- block-range index serves "older than the cutoff" at a fraction of a B-tree's cost per insert.
DROP INDEX events_time;
CREATE INDEX events_time ON events USING brin (time);
