-- Customer search (`/customers?q=`) matched the lower-cased JSON of every stored Stripe customer
-- (a few KB each): 65 ms at p50 with 50k customers on SQLite. This table keeps what a search
-- matches, the id, name and email, and is kept in step by the same write that stores a customer
-- object. `haystack` is the three lower-cased, one per line.
CREATE TABLE customer_search (
    id       TEXT NOT NULL PRIMARY KEY,
    name     TEXT,
    email    TEXT,
    haystack TEXT NOT NULL
);
INSERT INTO customer_search (id, name, email, haystack)
SELECT id, name, email,
       lower(id || chr(10) || coalesce(name, '') || chr(10) || coalesce(email, ''))
FROM (
    SELECT id,
           NULLIF(data::jsonb ->> 'name', '') AS name,
           NULLIF(data::jsonb ->> 'email', '') AS email
    FROM stripe_objects
    WHERE object_type = 'customer'
) AS customers;
