-- Customer search (`/customers?q=`) matched the lower-cased JSON of every stored Stripe customer
-- (a few KB each): 65 ms at p50 with 50k customers. This table keeps what a search matches, the
-- id, name and email, and is kept in step by the same write that stores a customer object.
-- `haystack` is the three lower-cased, one per line; this backfill lower-cases ASCII only (as
-- SQLite's lower() does), and the next sync of a customer writes Rust's full lower-casing.
CREATE TABLE customer_search (
    id       TEXT NOT NULL PRIMARY KEY,
    name     TEXT,
    email    TEXT,
    haystack TEXT NOT NULL
);
INSERT INTO customer_search (id, name, email, haystack)
SELECT id, name, email,
       lower(id || char(10) || coalesce(name, '') || char(10) || coalesce(email, ''))
FROM (
    SELECT id,
           NULLIF(CAST(json_extract(data, '$.name') AS TEXT), '') AS name,
           NULLIF(CAST(json_extract(data, '$.email') AS TEXT), '') AS email
    FROM stripe_objects
    WHERE object_type = 'customer' AND json_valid(data)
);
