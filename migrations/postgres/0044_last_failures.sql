-- The Overview's triage counts the customers with a failed payment in its period. Counted as
-- COUNT(DISTINCT customer_id) over the period's failures it sorted every one of them (2.2 ms
-- for 5,000 failures of 3,000 customers on SQLite, the page's largest single cost at 50k
-- customers). Each customer's latest failure is kept here by a trigger instead: for a period
-- that ends after the newest failure (the Overview's "last N days" always does), the customers
-- with a failure in it are those whose latest one is at or after its start, an index range
-- count (revenue::drill::failed_customers). A maximum cannot be kept as appended +1 / -1 rows
-- like the counts; the upsert locks one customer's row, and only payments of that customer
-- wait on it.
CREATE TABLE revenue_last_failures (
    customer_id TEXT PRIMARY KEY,
    -- The latest `created` (UTC ms) of the customer's failed payment objects.
    last_failed BIGINT NOT NULL
);
CREATE INDEX revenue_last_failures_at ON revenue_last_failures (last_failed);
INSERT INTO revenue_last_failures (customer_id, last_failed)
SELECT customer_id, MAX(created) FROM revenue_payments
WHERE failed = 1 AND customer_id IS NOT NULL GROUP BY customer_id;

CREATE FUNCTION revenue_last_failures_track() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    old_customer TEXT;
    new_customer TEXT;
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO revenue_last_failures (customer_id, last_failed)
        VALUES (NEW.customer_id, NEW.created)
        ON CONFLICT (customer_id) DO UPDATE
        SET last_failed = GREATEST(revenue_last_failures.last_failed, excluded.last_failed);
        RETURN NULL;
    END IF;
    -- A failure that went away or moved: the customers' latest are read again from their
    -- failures (revenue_payments_customer index).
    old_customer := OLD.customer_id;
    IF TG_OP = 'UPDATE' THEN
        new_customer := NEW.customer_id;
    END IF;
    DELETE FROM revenue_last_failures WHERE customer_id IN (old_customer, new_customer);
    INSERT INTO revenue_last_failures (customer_id, last_failed)
    SELECT customer_id, MAX(created) FROM revenue_payments
    WHERE failed = 1 AND customer_id IN (old_customer, new_customer)
    GROUP BY customer_id;
    RETURN NULL;
END
$$;
CREATE TRIGGER revenue_last_failures_insert AFTER INSERT ON revenue_payments
FOR EACH ROW WHEN (NEW.failed = 1 AND NEW.customer_id IS NOT NULL)
EXECUTE FUNCTION revenue_last_failures_track();
CREATE TRIGGER revenue_last_failures_delete AFTER DELETE ON revenue_payments
FOR EACH ROW WHEN (OLD.failed = 1 AND OLD.customer_id IS NOT NULL)
EXECUTE FUNCTION revenue_last_failures_track();
CREATE TRIGGER revenue_last_failures_update AFTER UPDATE OF customer_id, created, failed
ON revenue_payments FOR EACH ROW
WHEN ((OLD.failed = 1 OR NEW.failed = 1)
      AND (OLD.customer_id IS DISTINCT FROM NEW.customer_id
           OR OLD.created IS DISTINCT FROM NEW.created OR OLD.failed IS DISTINCT FROM NEW.failed))
EXECUTE FUNCTION revenue_last_failures_track();

-- No TRUNCATE trigger: nothing truncates revenue_payments.
