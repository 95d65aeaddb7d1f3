-- Monitors deleted whose history (results, rollups, readings, extras runs) is still being
-- removed. Deleting a monitor removes its row at once and leaves its id here; the history
-- goes afterwards, outside the scheduler's recorder, and a purge cut short (a crash) is
-- finished by the retention job. Ids are never reused, so nothing new can mix in.
CREATE TABLE monitor_purges (
    monitor_id BIGINT NOT NULL PRIMARY KEY,
    deleted_at BIGINT NOT NULL
);
