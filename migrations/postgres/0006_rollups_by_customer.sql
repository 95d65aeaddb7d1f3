-- Rollups keyed by customer first (see the SQLite file for the reasoning there). PostgreSQL
-- keeps rows in a heap either way; the primary key in (granularity, subject, bucket, ...)
-- order serves a customer's report and the all-customer totals (subject '') directly, so the
-- separate subject index goes, and pruning and the day-total reads by time get a narrower
-- (granularity, bucket) index.
ALTER TABLE usage_rollups DROP CONSTRAINT usage_rollups_pkey;
ALTER TABLE usage_rollups
    ADD PRIMARY KEY (granularity, subject, bucket, source, type, category, provider, sku, unit);
DROP INDEX usage_rollups_subject;
CREATE INDEX usage_rollups_bucket ON usage_rollups (granularity, bucket);
