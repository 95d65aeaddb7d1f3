-- Outgoing webhooks: endpoints, the messages sent to them, one delivery per (message,
-- endpoint) and every attempt of it. The deliveries table is the durable queue: a message is
-- stored with its deliveries in the transaction that produced it, and workers claim due
-- deliveries with a lease, so several instances never send one attempt twice.

-- Where messages go. The signing secret (`whsec_…`) is sealed with the master key.
CREATE TABLE webhook_endpoints (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    name            TEXT NOT NULL UNIQUE,
    url             TEXT NOT NULL,
    secret_nonce    BLOB NOT NULL,
    secret_sealed   BLOB NOT NULL,
    -- The event types sent here, as a JSON array; ["*"] for every type.
    event_types     TEXT NOT NULL,
    -- Most attempts a second to this endpoint; 0 for no limit.
    rate_per_second BIGINT NOT NULL DEFAULT 0,
    enabled         BIGINT NOT NULL DEFAULT 1,
    -- Why the endpoint was disabled (410 Gone, failing for days, by hand).
    disabled_reason TEXT,
    -- The first failure since the last success, to disable an endpoint failing for too long.
    failing_since   BIGINT,
    last_success_at BIGINT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);

-- A message as sent: the exact body (`{type, timestamp, data}`) every endpoint receives.
CREATE TABLE webhook_messages (
    id         TEXT NOT NULL PRIMARY KEY,
    type       TEXT NOT NULL,
    body       TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX webhook_messages_created ON webhook_messages (created_at);

-- One message to one endpoint. `state` is pending (due at next_attempt_at), succeeded, or
-- failed (the schedule ran out, or the endpoint was disabled). A worker claims a due delivery
-- by setting lease_owner and lease_until; another may claim it only once the lease lapsed.
CREATE TABLE webhook_deliveries (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id      TEXT NOT NULL,
    endpoint_id     BIGINT NOT NULL,
    state           TEXT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    -- Attempts made before the current retry schedule began (a manual retry or a replay
    -- starts the schedule again without renumbering the attempts).
    schedule_start  BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT,
    lease_owner     TEXT,
    lease_until     BIGINT,
    last_status     BIGINT,
    last_error      TEXT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    UNIQUE (message_id, endpoint_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE state = 'pending';
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id, created_at);
CREATE INDEX webhook_deliveries_failed ON webhook_deliveries (updated_at) WHERE state = 'failed';

-- Every attempt: status code, latency, a truncated excerpt of the answer, or the error.
CREATE TABLE webhook_attempts (
    delivery_id BIGINT NOT NULL,
    attempt     BIGINT NOT NULL,
    at          BIGINT NOT NULL,
    status      BIGINT,
    latency_us  BIGINT NOT NULL,
    response    TEXT,
    error       TEXT,
    -- The instance that made the attempt (its lease owner id).
    worker      TEXT NOT NULL,
    PRIMARY KEY (delivery_id, attempt)
);
