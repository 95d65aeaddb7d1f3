-- Figures read by provider checks (credits, balances, quota use, rate-limit headroom), one row
-- per check and figure, pruned with the raw check results. The quota forecast reads a
-- monitor's series by name and time.
CREATE TABLE provider_readings (
    monitor_id BIGINT NOT NULL,
    name       TEXT NOT NULL,
    at         BIGINT NOT NULL,
    value      DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (monitor_id, name, at)
);
