-- Counts the Overview and the Alerts page show on every request, kept as rows change instead of
-- counted per request: at 50k customers ~31k open alerts and ~31k customers over a quota
-- threshold took 3-5 ms each to count from their indexes, on every page load.
--
-- Kept by triggers, so every writer keeps them right (the alert engine, the alert routes, the
-- quota evaluator, retention) without knowing about them. On SQLite, where one writer holds the
-- lock, each key has one row updated in place. A migration that rebuilds `alerts` or
-- `quota_states` (SQLite's create-copy-rename) must create these triggers again.

-- Open alerts (pending or firing) by state and severity.
CREATE TABLE alert_counts (
    state    TEXT NOT NULL,
    severity TEXT NOT NULL,
    n        BIGINT NOT NULL,
    PRIMARY KEY (state, severity)
) WITHOUT ROWID;
INSERT INTO alert_counts (state, severity, n)
SELECT state, severity, COUNT(*) FROM alerts WHERE state IN ('pending', 'firing')
GROUP BY state, severity;

CREATE TRIGGER alert_counts_insert AFTER INSERT ON alerts
WHEN NEW.state IN ('pending', 'firing')
BEGIN
    INSERT INTO alert_counts (state, severity, n) VALUES (NEW.state, NEW.severity, 1)
    ON CONFLICT (state, severity) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER alert_counts_delete AFTER DELETE ON alerts
WHEN OLD.state IN ('pending', 'firing')
BEGIN
    UPDATE alert_counts SET n = n - 1 WHERE state = OLD.state AND severity = OLD.severity;
END;
CREATE TRIGGER alert_counts_update AFTER UPDATE OF state, severity ON alerts
WHEN OLD.state IS NOT NEW.state OR OLD.severity IS NOT NEW.severity
BEGIN
    UPDATE alert_counts SET n = n - 1
    WHERE OLD.state IN ('pending', 'firing') AND state = OLD.state AND severity = OLD.severity;
    INSERT INTO alert_counts (state, severity, n)
    SELECT NEW.state, NEW.severity, 1 WHERE NEW.state IN ('pending', 'firing')
    ON CONFLICT (state, severity) DO UPDATE SET n = n + 1;
END;

-- Customers by quota period and state (`ok`, `warning`, `exceeded`, ...).
CREATE TABLE quota_counts (
    period_start BIGINT NOT NULL,
    state        TEXT NOT NULL,
    n            BIGINT NOT NULL,
    PRIMARY KEY (period_start, state)
) WITHOUT ROWID;
INSERT INTO quota_counts (period_start, state, n)
SELECT period_start, state, COUNT(*) FROM quota_states GROUP BY period_start, state;

CREATE TRIGGER quota_counts_insert AFTER INSERT ON quota_states
BEGIN
    INSERT INTO quota_counts (period_start, state, n) VALUES (NEW.period_start, NEW.state, 1)
    ON CONFLICT (period_start, state) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER quota_counts_delete AFTER DELETE ON quota_states
BEGIN
    UPDATE quota_counts SET n = n - 1
    WHERE period_start = OLD.period_start AND state = OLD.state;
END;
CREATE TRIGGER quota_counts_update AFTER UPDATE OF state, period_start ON quota_states
WHEN OLD.state IS NOT NEW.state OR OLD.period_start IS NOT NEW.period_start
BEGIN
    UPDATE quota_counts SET n = n - 1
    WHERE period_start = OLD.period_start AND state = OLD.state;
    INSERT INTO quota_counts (period_start, state, n) VALUES (NEW.period_start, NEW.state, 1)
    ON CONFLICT (period_start, state) DO UPDATE SET n = n + 1;
END;
