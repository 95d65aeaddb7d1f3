-- SQLite finds a customer's events through runs of consecutive sequence numbers (see the
-- SQLite migration of the same number): its single writer paid one index leaf per active
-- customer per commit for (subject, seq). PostgreSQL keeps that index, whose pages stay in
-- shared buffers and are written by its background writer; these tables are created so that
-- both dialects hold the same tables, and stay empty.
CREATE TABLE event_runs (
    subject   TEXT NOT NULL,
    first_seq BIGINT NOT NULL,
    last_seq  BIGINT NOT NULL,
    PRIMARY KEY (subject, first_seq)
);
CREATE INDEX event_runs_last ON event_runs (last_seq);
CREATE TABLE event_runs_recent (
    first_seq BIGINT PRIMARY KEY,
    subject   TEXT NOT NULL,
    last_seq  BIGINT NOT NULL
);
