-- Counts the Overview and the Alerts page show on every request, kept as rows change instead of
-- counted per request: at 50k customers ~31k open alerts and ~31k customers over a quota
-- threshold took 3-5 ms each to count from their indexes, on every page load.
--
-- Kept by triggers, so every writer keeps them right (the alert engine, the alert routes, the
-- quota evaluator, retention) without knowing about them. On PostgreSQL several instances and
-- transactions write at once, and one row per key updated in place would make every writer
-- wait on it (and two transactions touching two keys in opposite orders deadlock). So a change
-- appends a +1 / -1 row, no row is ever updated, a reader sums a key's rows, and housekeeping
-- folds each key's rows into one (`compact`).

-- Open alerts (pending or firing) by state and severity.
CREATE TABLE alert_counts (
    state    TEXT NOT NULL,
    severity TEXT NOT NULL,
    n        BIGINT NOT NULL
);
CREATE INDEX alert_counts_key ON alert_counts (state, severity);
INSERT INTO alert_counts (state, severity, n)
SELECT state, severity, COUNT(*) FROM alerts WHERE state IN ('pending', 'firing')
GROUP BY state, severity;

CREATE FUNCTION alert_counts_track() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        IF OLD.state IN ('pending', 'firing') THEN
            INSERT INTO alert_counts (state, severity, n) VALUES (OLD.state, OLD.severity, -1);
        END IF;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        IF NEW.state IN ('pending', 'firing') THEN
            INSERT INTO alert_counts (state, severity, n) VALUES (NEW.state, NEW.severity, 1);
        END IF;
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER alert_counts_insert_delete AFTER INSERT OR DELETE ON alerts
FOR EACH ROW EXECUTE FUNCTION alert_counts_track();
CREATE TRIGGER alert_counts_update AFTER UPDATE OF state, severity ON alerts
FOR EACH ROW
WHEN (OLD.state IS DISTINCT FROM NEW.state OR OLD.severity IS DISTINCT FROM NEW.severity)
EXECUTE FUNCTION alert_counts_track();

-- Customers by quota period and state (`ok`, `warning`, `exceeded`, ...).
CREATE TABLE quota_counts (
    period_start BIGINT NOT NULL,
    state        TEXT NOT NULL,
    n            BIGINT NOT NULL
);
CREATE INDEX quota_counts_key ON quota_counts (period_start, state);
INSERT INTO quota_counts (period_start, state, n)
SELECT period_start, state, COUNT(*) FROM quota_states GROUP BY period_start, state;

CREATE FUNCTION quota_counts_track() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        INSERT INTO quota_counts (period_start, state, n) VALUES (OLD.period_start, OLD.state, -1);
    END IF;
    IF TG_OP <> 'DELETE' THEN
        INSERT INTO quota_counts (period_start, state, n) VALUES (NEW.period_start, NEW.state, 1);
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER quota_counts_insert_delete AFTER INSERT OR DELETE ON quota_states
FOR EACH ROW EXECUTE FUNCTION quota_counts_track();
CREATE TRIGGER quota_counts_update AFTER UPDATE OF state, period_start ON quota_states
FOR EACH ROW
WHEN (OLD.state IS DISTINCT FROM NEW.state OR OLD.period_start IS DISTINCT FROM NEW.period_start)
EXECUTE FUNCTION quota_counts_track();
