-- Platform tables: people, their sessions and API keys, encrypted provider secrets, audit log.
-- Every *_at column is UTC milliseconds since the Unix epoch.

-- Ids are never reused (AUTOINCREMENT on SQLite, identity on PostgreSQL), so a stale
-- reference to a deleted row cannot hit a newer one.

CREATE TABLE users (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    -- Stored lower-cased so sign-in is case-insensitive without a functional index.
    email         TEXT NOT NULL UNIQUE,
    -- PHC-format argon2id hash; never the password.
    password_hash TEXT NOT NULL,
    role          TEXT NOT NULL CHECK (role IN ('admin', 'viewer')),
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);

CREATE TABLE sessions (
    -- SHA-256 of the cookie value: a leaked database does not yield usable cookies.
    id_hash     TEXT PRIMARY KEY,
    user_id     BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- Per-session synchronizer token every state-changing form must echo.
    csrf_token  TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    client_addr TEXT,
    user_agent  TEXT
);
-- The prune job deletes by expiry; password changes delete by user.
CREATE INDEX sessions_expires_at ON sessions (expires_at);
CREATE INDEX sessions_user_id ON sessions (user_id);

CREATE TABLE api_keys (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    name         TEXT NOT NULL,
    -- Public part of the key (`opsk_<prefix>_…`), used to find the row without scanning hashes.
    prefix       TEXT NOT NULL UNIQUE,
    -- SHA-256 of the whole key; keys are 256-bit random, so a fast hash is enough.
    key_hash     TEXT NOT NULL,
    -- Space-separated scopes: ingest, read, admin, tenant:<customer-id>.
    scopes       TEXT NOT NULL,
    created_by   TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    last_used_at BIGINT,
    revoked_at   BIGINT
);

CREATE TABLE secrets (
    name       TEXT PRIMARY KEY,
    -- AES-256-GCM under the master key, with the name as associated data so that ciphertexts
    -- cannot be swapped between rows.
    nonce      BLOB NOT NULL,
    ciphertext BLOB NOT NULL,
    updated_by TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE audit_log (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at          BIGINT NOT NULL,
    -- `user:<email>`, `key:<id>:<name>` or `cli:<os user>`.
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    target      TEXT,
    -- JSON object with action-specific context; never a secret.
    detail      TEXT,
    client_addr TEXT
);
