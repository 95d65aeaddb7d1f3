-- The Payments page (/revenue/payments and its CSV) counted a period's objects of one kind for
-- its pager: ~50k index entries for 30 days of charges at 50k customers (2.7 ms a load). They
-- are now also counted by kind, day of creation and whether they failed, kept by triggers that
-- append +1 / -1 rows folded by housekeeping (as migration 0036's delivery counts are), so a
-- period is a few rows per day (revenue::drill::payments).
CREATE TABLE revenue_payment_counts (
    kind   TEXT NOT NULL,
    -- created floored to the UTC day, ms.
    day    BIGINT NOT NULL,
    failed BIGINT NOT NULL,
    n      BIGINT NOT NULL
);
CREATE INDEX revenue_payment_counts_key ON revenue_payment_counts (kind, day, failed);
INSERT INTO revenue_payment_counts (kind, day, failed, n)
SELECT kind, created - created % 86400000, failed, COUNT(*)
FROM revenue_payments GROUP BY kind, created - created % 86400000, failed;

CREATE FUNCTION revenue_payment_counts_track() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        INSERT INTO revenue_payment_counts (kind, day, failed, n)
        VALUES (OLD.kind, OLD.created - OLD.created % 86400000, OLD.failed, -1);
    END IF;
    IF TG_OP <> 'DELETE' THEN
        INSERT INTO revenue_payment_counts (kind, day, failed, n)
        VALUES (NEW.kind, NEW.created - NEW.created % 86400000, NEW.failed, 1);
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER revenue_payment_counts_insert_delete AFTER INSERT OR DELETE ON revenue_payments
FOR EACH ROW EXECUTE FUNCTION revenue_payment_counts_track();
CREATE TRIGGER revenue_payment_counts_update AFTER UPDATE OF kind, created, failed ON revenue_payments
FOR EACH ROW
WHEN (OLD.kind IS DISTINCT FROM NEW.kind OR OLD.created IS DISTINCT FROM NEW.created
      OR OLD.failed IS DISTINCT FROM NEW.failed)
EXECUTE FUNCTION revenue_payment_counts_track();

-- No TRUNCATE trigger: nothing truncates revenue_payments (a TRUNCATE would leave these
-- counts behind).

-- The page's list, newest first with the id breaking ties (ORDER BY created DESC, id DESC),
-- walks this index backwards and stops after a page. Ordered by (created, failed) it had to sort
-- every object sharing a timestamp (a billing run creates thousands in the same second).
DROP INDEX revenue_payments_created;
CREATE INDEX revenue_payments_created ON revenue_payments (kind, created, id, failed);
