-- Integration health.

-- Monitors, from config (`source` = 'config', read-only in the UI) or created through the
-- API ('api'). The definition is sealed with the master key (its headers and targets may hold
-- credentials); name, kind and source are kept plain for lists.
CREATE TABLE monitors (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT NOT NULL UNIQUE,
    kind        TEXT NOT NULL,
    source      TEXT NOT NULL,
    spec_nonce  BLOB NOT NULL,
    spec_sealed BLOB NOT NULL,
    paused      BIGINT NOT NULL DEFAULT 0,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);

-- Each monitor's state and its current run of failures or successes, so a restart resumes
-- the thresholds where they were.
CREATE TABLE monitor_states (
    monitor_id      BIGINT NOT NULL PRIMARY KEY REFERENCES monitors (id) ON DELETE CASCADE,
    state           TEXT NOT NULL,
    since           BIGINT,
    failures        BIGINT NOT NULL,
    successes       BIGINT NOT NULL,
    last_check_at   BIGINT,
    last_latency_us BIGINT,
    last_error      TEXT
);

-- Raw check results, pruned by retention: verdict, latency, HTTP status, the error and the
-- rate-limit/quota headers kept (JSON).
CREATE TABLE check_results (
    monitor_id BIGINT NOT NULL,
    at         BIGINT NOT NULL,
    verdict    TEXT NOT NULL,
    latency_us BIGINT NOT NULL,
    status     BIGINT,
    error      TEXT,
    headers    TEXT,
    PRIMARY KEY (monitor_id, at)
) WITHOUT ROWID;

-- Per monitor and minute/hour/day: counts by verdict and a latency histogram (b0..b19, bounds
-- in health::rollups), so uptime and percentiles never scan raw results.
CREATE TABLE check_rollups (
    monitor_id     BIGINT NOT NULL,
    granularity    TEXT NOT NULL,
    bucket         BIGINT NOT NULL,
    checks         BIGINT NOT NULL,
    up             BIGINT NOT NULL,
    degraded       BIGINT NOT NULL,
    down           BIGINT NOT NULL,
    latency_sum_us BIGINT NOT NULL,
    b0             BIGINT NOT NULL DEFAULT 0,
    b1             BIGINT NOT NULL DEFAULT 0,
    b2             BIGINT NOT NULL DEFAULT 0,
    b3             BIGINT NOT NULL DEFAULT 0,
    b4             BIGINT NOT NULL DEFAULT 0,
    b5             BIGINT NOT NULL DEFAULT 0,
    b6             BIGINT NOT NULL DEFAULT 0,
    b7             BIGINT NOT NULL DEFAULT 0,
    b8             BIGINT NOT NULL DEFAULT 0,
    b9             BIGINT NOT NULL DEFAULT 0,
    b10             BIGINT NOT NULL DEFAULT 0,
    b11             BIGINT NOT NULL DEFAULT 0,
    b12             BIGINT NOT NULL DEFAULT 0,
    b13             BIGINT NOT NULL DEFAULT 0,
    b14             BIGINT NOT NULL DEFAULT 0,
    b15             BIGINT NOT NULL DEFAULT 0,
    b16             BIGINT NOT NULL DEFAULT 0,
    b17             BIGINT NOT NULL DEFAULT 0,
    b18             BIGINT NOT NULL DEFAULT 0,
    b19             BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (monitor_id, granularity, bucket)
) WITHOUT ROWID;
