-- Provider extras: the slower collection a provider monitor makes besides its health read
-- (n8n executions, Twilio/Vonage traffic, Retell calls, DigitalOcean droplets, Supabase
-- usage). One row per monitor and collection slot; the figures themselves go to
-- provider_readings at `started_at`, this row keeps how the run went and the non-numeric
-- parts. Pruned with the check results.
CREATE TABLE provider_extras (
    monitor_id  BIGINT NOT NULL,
    -- Start of the monitor's collection slot (UTC ms). Inserting the row claims the slot, so
    -- with several instances on one database each slot is collected once.
    slot        BIGINT NOT NULL,
    -- When the claiming instance started (UTC ms); the readings carry this time.
    started_at  BIGINT NOT NULL,
    finished_at BIGINT,
    -- running, ok or failed.
    state       TEXT NOT NULL,
    -- Why a failed run failed; never holds a credential.
    error       TEXT,
    -- The run's snapshot as JSON (health::extras::Snapshot): tables for the monitor page.
    snapshot    TEXT,
    PRIMARY KEY (monitor_id, slot)
);
