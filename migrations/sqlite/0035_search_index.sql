-- Customer search (`/customers?q=`) scanned every row of customer_search with LIKE '%q%':
-- 7-9 ms at 50k customers on every search. A trigram full-text index finds the rows holding a
-- substring of three characters or more from its posting lists instead (0.35 ms for 100 matches
-- of 50k in a trial). Shorter queries, and queries matching more rows than a search keeps,
-- still scan (see revenue::customers::search).
--
-- customer_search is WITHOUT ROWID (its scan in id order is the short-query path), and FTS5
-- addresses rows by integer, so customer_search_fts_keys gives each id its FTS row number.
-- Triggers keep both in step with customer_search. Neither has a PostgreSQL twin: there a
-- pg_trgm index on customer_search.haystack does the same job.
CREATE VIRTUAL TABLE customer_search_fts USING fts5(haystack, tokenize = 'trigram');
CREATE TABLE customer_search_fts_keys (
    docid INTEGER PRIMARY KEY,
    id    TEXT NOT NULL UNIQUE
);
INSERT INTO customer_search_fts_keys (id) SELECT id FROM customer_search ORDER BY id;
INSERT INTO customer_search_fts (rowid, haystack)
SELECT k.docid, s.haystack FROM customer_search s JOIN customer_search_fts_keys k ON k.id = s.id;

CREATE TRIGGER customer_search_fts_insert AFTER INSERT ON customer_search
BEGIN
    INSERT INTO customer_search_fts_keys (id) VALUES (NEW.id);
    INSERT INTO customer_search_fts (rowid, haystack)
    SELECT docid, NEW.haystack FROM customer_search_fts_keys WHERE id = NEW.id;
END;
CREATE TRIGGER customer_search_fts_update AFTER UPDATE OF haystack ON customer_search
WHEN OLD.haystack IS NOT NEW.haystack
BEGIN
    UPDATE customer_search_fts SET haystack = NEW.haystack
    WHERE rowid = (SELECT docid FROM customer_search_fts_keys WHERE id = NEW.id);
END;
CREATE TRIGGER customer_search_fts_delete AFTER DELETE ON customer_search
BEGIN
    DELETE FROM customer_search_fts
    WHERE rowid = (SELECT docid FROM customer_search_fts_keys WHERE id = OLD.id);
    DELETE FROM customer_search_fts_keys WHERE id = OLD.id;
END;
