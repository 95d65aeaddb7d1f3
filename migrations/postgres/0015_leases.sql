-- Leases on singleton background work (the health scheduler): with several instances on one
-- database, the holder of an unexpired lease runs it and the others stand by, so a check runs
-- once per interval whichever instance is alive.
CREATE TABLE leases (
    name       TEXT NOT NULL PRIMARY KEY,
    holder     TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
