-- Metering: plans and the customers on them, quota states and their history, provider prices,
-- and the cost / endpoint-category / latency dimensions of the usage rollups.

-- Plans declared in config (origin 'config': the config file is authoritative and the UI shows
-- them read-only) or created in Settings (origin 'ui').
CREATE TABLE plans (
    id                 TEXT PRIMARY KEY,
    name               TEXT NOT NULL,
    -- Monthly price in minor units of `currency`.
    price_minor        BIGINT NOT NULL,
    currency           TEXT NOT NULL,
    -- Monthly quotas; 0 means no quota on that dimension.
    api_calls          BIGINT NOT NULL,
    provider_credits   BIGINT NOT NULL,
    -- Overage per 1,000 calls past the quota, in pico-USD (10^-12 USD) so sub-cent prices are exact.
    overage_pico_per_1k BIGINT NOT NULL,
    hard_limit_percent BIGINT NOT NULL,
    origin             TEXT NOT NULL,
    created_at         BIGINT NOT NULL,
    updated_at         BIGINT NOT NULL
);

-- Which plan a customer (the events' `subject`) is on: set by hand ('manual') until Stripe sync
-- maps customers from their subscriptions ('stripe').
CREATE TABLE customer_plans (
    customer_id TEXT PRIMARY KEY,
    plan_id     TEXT NOT NULL REFERENCES plans (id),
    source      TEXT NOT NULL,
    assigned_at BIGINT NOT NULL
);
CREATE INDEX customer_plans_plan ON customer_plans (plan_id);

-- The last quota state recorded per customer, with hysteresis applied; the quota route and the
-- evaluator both start from it, so they agree.
CREATE TABLE quota_states (
    customer_id  TEXT PRIMARY KEY,
    plan_id      TEXT NOT NULL,
    period_start BIGINT NOT NULL,
    state        TEXT NOT NULL,
    percent      DOUBLE PRECISION NOT NULL,
    changed_at   BIGINT NOT NULL
);
CREATE INDEX quota_states_state ON quota_states (state);

-- Every recorded state change, oldest first by id; the alerts capability consumes these.
CREATE TABLE quota_state_changes (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    customer_id  TEXT NOT NULL,
    plan_id      TEXT NOT NULL,
    period_start BIGINT NOT NULL,
    from_state   TEXT NOT NULL,
    to_state     TEXT NOT NULL,
    percent      DOUBLE PRECISION NOT NULL,
    at           BIGINT NOT NULL
);
CREATE INDEX quota_state_changes_customer ON quota_state_changes (customer_id, at);

-- Provider unit prices. A price applies from `effective_from` until the next row for the same
-- provider and sku, so adding a price never rewrites costs already computed.
CREATE TABLE prices (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    provider       TEXT NOT NULL,
    sku            TEXT NOT NULL,
    unit           TEXT NOT NULL,
    -- USD per unit in pico-dollars (10^-12): $0.0045 is 4500000000, exactly.
    price_pico     BIGINT NOT NULL,
    effective_from BIGINT NOT NULL,
    -- 'default' (shipped), 'config', 'import' or 'ui'.
    origin         TEXT NOT NULL,
    created_at     BIGINT NOT NULL,
    UNIQUE (provider, sku, effective_from)
);

-- The product documents' prices, dated 2024-01-01 so a year of history is priced.
INSERT INTO prices (provider, sku, unit, price_pico, effective_from, origin, created_at) VALUES
    ('luma', 'v1', 'credit', 3200000000, 1704067200000, 'default', 0),
    ('luma', 'v2', 'credit', 4500000000, 1704067200000, 'default', 0),
    ('kling', 'v1', 'credit', 4000000000, 1704067200000, 'default', 0),
    ('kling', 'v2', 'credit', 6000000000, 1704067200000, 'default', 0),
    ('bfl', 'flux', 'image', 3000000000, 1704067200000, 'default', 0),
    ('elevenlabs', 'tts', 'character', 1000000000, 1704067200000, 'default', 0);

-- Cost of a provider.usage event at ingest, in nano-USD (10^-9); NULL when not priced.
ALTER TABLE events ADD COLUMN cost_nano BIGINT;

-- Rollups gain the endpoint category (api.request), the unit (provider.usage), cost and
-- unpriced counts, and a latency histogram (api.request; bucket upper bounds in ms, the last
-- open-ended). Rebuilt because the primary key grows. Granularities 'minute_total',
-- 'hour_total' and 'day_total' hold the same sums over all customers (subject ''), so
-- all-customer figures read a few rows per bucket instead of one per customer.
ALTER TABLE usage_rollups RENAME TO usage_rollups_old;
DROP INDEX usage_rollups_subject;
CREATE TABLE usage_rollups (
    granularity     TEXT NOT NULL,
    bucket          BIGINT NOT NULL,
    subject         TEXT NOT NULL,
    source          TEXT NOT NULL,
    type            TEXT NOT NULL,
    category        TEXT NOT NULL,
    provider        TEXT NOT NULL,
    sku             TEXT NOT NULL,
    unit            TEXT NOT NULL,
    events          BIGINT NOT NULL,
    quantity        DOUBLE PRECISION NOT NULL,
    cost_nano       BIGINT NOT NULL,
    unpriced        BIGINT NOT NULL,
    status_2xx      BIGINT NOT NULL,
    status_3xx      BIGINT NOT NULL,
    status_4xx      BIGINT NOT NULL,
    status_5xx      BIGINT NOT NULL,
    duration_ms_sum DOUBLE PRECISION NOT NULL,
    lat_50          BIGINT NOT NULL,
    lat_100         BIGINT NOT NULL,
    lat_250         BIGINT NOT NULL,
    lat_500         BIGINT NOT NULL,
    lat_1000        BIGINT NOT NULL,
    lat_2500        BIGINT NOT NULL,
    lat_5000        BIGINT NOT NULL,
    lat_inf         BIGINT NOT NULL,
    PRIMARY KEY (granularity, bucket, subject, source, type, category, provider, sku, unit)
);
INSERT INTO usage_rollups
SELECT granularity, bucket, subject, source, type, '', provider, sku, '', events, quantity, 0, 0,
       status_2xx, status_3xx, status_4xx, status_5xx, duration_ms_sum, 0, 0, 0, 0, 0, 0, 0, 0
FROM usage_rollups_old;
DROP TABLE usage_rollups_old;
CREATE INDEX usage_rollups_subject ON usage_rollups (granularity, subject, bucket);

-- Per customer and calendar month (UTC): the quota route's one-row read, and "top customers this
-- month" by calls or cost without scanning the day rollups of every customer.
CREATE TABLE usage_months (
    month     BIGINT NOT NULL,
    subject   TEXT NOT NULL,
    calls     BIGINT NOT NULL,
    events    BIGINT NOT NULL,
    credits   DOUBLE PRECISION NOT NULL,
    cost_nano BIGINT NOT NULL,
    PRIMARY KEY (month, subject)
);
CREATE INDEX usage_months_calls ON usage_months (month, calls);
CREATE INDEX usage_months_cost ON usage_months (month, cost_nano);
