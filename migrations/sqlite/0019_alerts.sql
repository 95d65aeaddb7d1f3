-- Alerts: rules, the alerts they raise (one row per rule and series while it is open, kept
-- once resolved as history), each alert's timeline, and silences / maintenance windows.

-- A rule from config ('config', read-only), the built-in defaults ('default') or the API
-- ('api'). The validated definition is kept as JSON; name and source plain for lists.
CREATE TABLE alert_rules (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    name       TEXT NOT NULL UNIQUE,
    source     TEXT NOT NULL,
    spec       TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- One alert: a rule's condition holding for one series (its labels, e.g. one integration).
-- state is pending (holding, not yet for `for`), firing, or resolved. At most one open
-- (pending or firing) alert per rule and series, so evaluating twice cannot raise two.
CREATE TABLE alerts (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    rule_id          BIGINT NOT NULL,
    rule             TEXT NOT NULL,
    fingerprint      TEXT NOT NULL,
    labels           TEXT NOT NULL,
    state            TEXT NOT NULL,
    severity         TEXT NOT NULL,
    group_key        TEXT NOT NULL,
    summary          TEXT NOT NULL,
    value            DOUBLE PRECISION,
    threshold        DOUBLE PRECISION NOT NULL,
    pending_since    BIGINT NOT NULL,
    started_at       BIGINT,
    resolved_at      BIGINT,
    last_notified_at BIGINT,
    acked_by         TEXT,
    acked_at         BIGINT,
    ack_note         TEXT,
    updated_at       BIGINT NOT NULL
);
CREATE UNIQUE INDEX alerts_open ON alerts (rule_id, fingerprint) WHERE state <> 'resolved';
CREATE INDEX alerts_state ON alerts (state, id);
CREATE INDEX alerts_rule ON alerts (rule_id, id);

-- What happened to each alert, in order: fired, resolved, acknowledged, notified (and to
-- whom), silenced, reminded.
CREATE TABLE alert_events (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    alert_id BIGINT NOT NULL,
    at       BIGINT NOT NULL,
    kind     TEXT NOT NULL,
    detail   TEXT
);
CREATE INDEX alert_events_alert ON alert_events (alert_id, id);

-- Silences (notifications held back) and maintenance windows (alerts not raised at all) for
-- the alerts whose labels match every matcher (JSON object label → value; `rule` matches
-- the rule's name), between starts_at and ends_at.
CREATE TABLE alert_silences (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    kind       TEXT NOT NULL,
    matchers   TEXT NOT NULL,
    starts_at  BIGINT NOT NULL,
    ends_at    BIGINT NOT NULL,
    comment    TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX alert_silences_ends ON alert_silences (ends_at);

-- The webhook failure rate rule reads attempts by time.
CREATE INDEX webhook_attempts_at ON webhook_attempts (at);
