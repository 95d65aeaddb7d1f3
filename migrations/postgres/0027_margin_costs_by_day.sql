-- The margin report's provider cost per customer and day (revenue::margin) read every day rollup
-- of the period through the (granularity, bucket) index, all event types, to keep the few that
-- are provider.usage: with 50k customers that is millions of rows per request. This index holds
-- only provider.usage rows and every column the query reads, so the report walks just those.
-- Numbered 0027 to leave 0026 to the ingest work landing at the same time.
CREATE INDEX usage_rollups_provider_cost ON usage_rollups (granularity, bucket, subject, provider, cost_nano)
    WHERE type = 'provider.usage';
