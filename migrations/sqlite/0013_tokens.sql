-- OAuth credentials and their refresh log (the tokens domain).

-- One row per credential, from config (`source` = 'config', re-applied at start) or created
-- through the API ('api'). The secrets (client secret, access token, refresh token) are one
-- JSON object sealed with the master key under the credential's name; everything a list or the
-- refresh job needs to decide is plain.
CREATE TABLE credentials (
    id                     INTEGER PRIMARY KEY AUTOINCREMENT,
    name                   TEXT NOT NULL UNIQUE,
    -- google | meta | oauth2
    provider               TEXT NOT NULL,
    source                 TEXT NOT NULL,
    token_url              TEXT NOT NULL,
    -- body | basic: where the refresh-token grant sends the client credentials.
    client_auth            TEXT NOT NULL,
    client_id              TEXT NOT NULL,
    -- Space-separated, as OAuth2 writes them.
    scopes                 TEXT NOT NULL,
    owner                  TEXT NOT NULL,
    tenant                 TEXT NOT NULL,
    warn_before_ms         BIGINT NOT NULL,
    -- 1 when the access token renews through a refresh token, so its own expiry is no
    -- warning while refreshing works.
    renews                 BIGINT NOT NULL,
    secrets_nonce          BLOB NOT NULL,
    secrets_sealed         BLOB NOT NULL,
    -- SHA-256 of the secrets the config file gave: a restart with the same file keeps the
    -- refreshed tokens, a changed file (a re-authorization) replaces them.
    config_digest          TEXT,
    -- Access token expiry and Meta's data-access expiry (UTC ms; NULL = unknown or never).
    expires_at             BIGINT,
    data_access_expires_at BIGINT,
    -- When the current access token was obtained; with expires_at, its lifetime.
    obtained_at            BIGINT NOT NULL,
    -- ok | refresh_failing | reauthorization_required (expiring is derived from the times).
    state                  TEXT NOT NULL,
    last_error             TEXT,
    -- Consecutive failed refreshes, and when the job may try again (backoff).
    failures               BIGINT NOT NULL DEFAULT 0,
    next_attempt_at        BIGINT,
    last_refresh_at        BIGINT,
    last_outcome           TEXT,
    -- The expiry the "expiring" warning was logged for, so it is logged once per expiry.
    warned_for             BIGINT,
    -- A refresh in progress on some instance holds the row until then (UTC ms).
    lease_until            BIGINT,
    created_at             BIGINT NOT NULL,
    updated_at             BIGINT NOT NULL
);

-- Every refresh attempt with its outcome: refreshed | invalid_grant | failed. Never a secret.
CREATE TABLE token_refresh_log (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    credential_id BIGINT NOT NULL,
    at            BIGINT NOT NULL,
    -- job | manual
    trigger       TEXT NOT NULL,
    outcome       TEXT NOT NULL,
    error         TEXT,
    -- The new expiry after a successful refresh.
    expires_at    BIGINT,
    duration_ms   BIGINT NOT NULL
);
-- The Token Status tab reads each credential's latest attempts.
CREATE INDEX token_refresh_log_by_credential ON token_refresh_log (credential_id, at);
