-- The Overview's triage counts the customers with a failed payment in its period. Counted as
-- COUNT(DISTINCT customer_id) over the period's failures it sorted every one of them (2.2 ms
-- for 5,000 failures of 3,000 customers, the page's largest single cost at 50k customers).
-- Each customer's latest failure is kept here by triggers instead: for a period that ends
-- after the newest failure (the Overview's "last N days" always does), the customers with a
-- failure in it are those whose latest one is at or after its start, an index range count
-- (revenue::drill::failed_customers).
CREATE TABLE revenue_last_failures (
    customer_id TEXT PRIMARY KEY,
    -- The latest `created` (UTC ms) of the customer's failed payment objects.
    last_failed BIGINT NOT NULL
) WITHOUT ROWID;
CREATE INDEX revenue_last_failures_at ON revenue_last_failures (last_failed);
INSERT INTO revenue_last_failures (customer_id, last_failed)
SELECT customer_id, MAX(created) FROM revenue_payments
WHERE failed = 1 AND customer_id IS NOT NULL GROUP BY customer_id;

CREATE TRIGGER revenue_last_failures_insert AFTER INSERT ON revenue_payments
WHEN NEW.failed = 1 AND NEW.customer_id IS NOT NULL
BEGIN
    INSERT INTO revenue_last_failures (customer_id, last_failed)
    VALUES (NEW.customer_id, NEW.created)
    ON CONFLICT (customer_id) DO UPDATE SET last_failed = MAX(last_failed, excluded.last_failed);
END;
-- A failure that goes away (deleted, paid after all, moved to another customer or time):
-- the customer's latest is read again from their failures (revenue_payments_customer index).
CREATE TRIGGER revenue_last_failures_delete AFTER DELETE ON revenue_payments
WHEN OLD.failed = 1 AND OLD.customer_id IS NOT NULL
BEGIN
    DELETE FROM revenue_last_failures WHERE customer_id = OLD.customer_id;
    INSERT INTO revenue_last_failures (customer_id, last_failed)
    SELECT customer_id, MAX(created) FROM revenue_payments
    WHERE customer_id = OLD.customer_id AND failed = 1 GROUP BY customer_id;
END;
CREATE TRIGGER revenue_last_failures_update
AFTER UPDATE OF customer_id, created, failed ON revenue_payments
WHEN (OLD.failed = 1 OR NEW.failed = 1)
 AND (OLD.customer_id IS NOT NEW.customer_id OR OLD.created IS NOT NEW.created
      OR OLD.failed IS NOT NEW.failed)
BEGIN
    DELETE FROM revenue_last_failures WHERE customer_id IN (OLD.customer_id, NEW.customer_id);
    INSERT INTO revenue_last_failures (customer_id, last_failed)
    SELECT customer_id, MAX(created) FROM revenue_payments
    WHERE customer_id IN (OLD.customer_id, NEW.customer_id) AND failed = 1
    GROUP BY customer_id;
END;
