-- Raw usage and analytics events as received through POST /api/v1/events (CloudEvents 1.0).

CREATE TABLE events (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    -- CloudEvents `source` (the app) and `id`: together the dedup key, forever within retention.
    source      TEXT NOT NULL,
    event_id    TEXT NOT NULL,
    type        TEXT NOT NULL,
    -- The customer id; required for metered types.
    subject     TEXT,
    -- Event time and receipt time, UTC milliseconds.
    time        BIGINT NOT NULL,
    received_at BIGINT NOT NULL,
    -- `data` as compact JSON text.
    data        TEXT NOT NULL,
    UNIQUE (source, event_id)
);
-- Per-customer usage over a period and retention pruning both range over time.
CREATE INDEX events_subject_time ON events (subject, time);
CREATE INDEX events_time ON events (time);
