-- Customer search (`/customers?q=`) scanned every row of customer_search with LIKE '%q%'. A
-- pg_trgm GIN index lets PostgreSQL answer LIKE '%q%' of three characters or more from the
-- index. pg_trgm ships with PostgreSQL's contrib modules and is a trusted extension (any user
-- who may create objects in the database may install it); where it is missing or may not be
-- installed, search keeps scanning, which is correct, only slower at tens of thousands of
-- customers. SQLite does the same with an FTS5 trigram table (its migration 0035).
DO $$
BEGIN
    CREATE EXTENSION IF NOT EXISTS pg_trgm;
    CREATE INDEX customer_search_trigrams ON customer_search USING gin (haystack gin_trgm_ops);
EXCEPTION WHEN OTHERS THEN
    RAISE NOTICE 'pg_trgm unavailable (%); customer search will scan customer_search', SQLERRM;
END
$$;
