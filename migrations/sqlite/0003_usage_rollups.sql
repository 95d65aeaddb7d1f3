-- Usage rollups per minute, hour and day, maintained by the ingest writer in the same
-- transaction as the raw events, so a figure never disagrees with the events behind it.
-- Dimensions that do not apply are '' (not NULL) so they can be part of the primary key.

CREATE TABLE usage_rollups (
    -- 'minute', 'hour' or 'day'.
    granularity     TEXT NOT NULL,
    -- Start of the bucket, UTC milliseconds.
    bucket          BIGINT NOT NULL,
    -- Customer id (`subject`), app (`source`), event type; provider and sku of provider.usage.
    subject         TEXT NOT NULL,
    source          TEXT NOT NULL,
    type            TEXT NOT NULL,
    provider        TEXT NOT NULL,
    sku             TEXT NOT NULL,
    events          BIGINT NOT NULL,
    -- Sum of provider.usage quantities.
    quantity        DOUBLE PRECISION NOT NULL,
    -- api.request outcomes by status class, and the summed duration for averages.
    status_2xx      BIGINT NOT NULL,
    status_3xx      BIGINT NOT NULL,
    status_4xx      BIGINT NOT NULL,
    status_5xx      BIGINT NOT NULL,
    duration_ms_sum DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (granularity, bucket, subject, source, type, provider, sku)
);
-- Per-customer series (usage page, quota) read by customer and time range.
CREATE INDEX usage_rollups_subject ON usage_rollups (granularity, subject, bucket);
