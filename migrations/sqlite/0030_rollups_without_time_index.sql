-- Rollups lose their (granularity, bucket) index. With many customers nearly every event of a
-- history import is a rollup row of its own, and each row was also an entry at a random place
-- of this index: half of the import's random page writes. Retention, its main reader, now walks
-- the customers along the primary key (usage::retention); the all-customer rows (subject '')
-- are in bucket order under the primary key already.
DROP INDEX usage_rollups_bucket;
