-- The Payments page (/revenue/payments and its CSV) counted a period's objects of one kind for
-- its pager: ~50k index entries for 30 days of charges at 50k customers (2.7 ms a load). They
-- are now also counted by kind, day of creation and whether they failed, kept by triggers (as
-- migration 0036's delivery counts are), so a period is a row per day (revenue::drill::payments).
CREATE TABLE revenue_payment_counts (
    kind   TEXT NOT NULL,
    -- created floored to the UTC day, ms.
    day    BIGINT NOT NULL,
    failed BIGINT NOT NULL,
    n      BIGINT NOT NULL,
    PRIMARY KEY (kind, day, failed)
) WITHOUT ROWID;
INSERT INTO revenue_payment_counts (kind, day, failed, n)
SELECT kind, created - created % 86400000, failed, COUNT(*)
FROM revenue_payments GROUP BY kind, created - created % 86400000, failed;

CREATE TRIGGER revenue_payment_counts_insert AFTER INSERT ON revenue_payments
BEGIN
    INSERT INTO revenue_payment_counts (kind, day, failed, n)
    VALUES (NEW.kind, NEW.created - NEW.created % 86400000, NEW.failed, 1)
    ON CONFLICT (kind, day, failed) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER revenue_payment_counts_delete AFTER DELETE ON revenue_payments
BEGIN
    UPDATE revenue_payment_counts SET n = n - 1
    WHERE kind = OLD.kind AND day = OLD.created - OLD.created % 86400000 AND failed = OLD.failed;
END;
CREATE TRIGGER revenue_payment_counts_update
AFTER UPDATE OF kind, created, failed ON revenue_payments
WHEN OLD.kind IS NOT NEW.kind OR OLD.created IS NOT NEW.created OR OLD.failed IS NOT NEW.failed
BEGIN
    UPDATE revenue_payment_counts SET n = n - 1
    WHERE kind = OLD.kind AND day = OLD.created - OLD.created % 86400000 AND failed = OLD.failed;
    INSERT INTO revenue_payment_counts (kind, day, failed, n)
    VALUES (NEW.kind, NEW.created - NEW.created % 86400000, NEW.failed, 1)
    ON CONFLICT (kind, day, failed) DO UPDATE SET n = n + 1;
END;

-- The page's list, newest first with the id breaking ties (ORDER BY created DESC, id DESC),
-- walks this index backwards and stops after a page. Ordered by (created, failed) it had to sort
-- every object sharing a timestamp (a billing run creates thousands in the same second).
DROP INDEX revenue_payments_created;
CREATE INDEX revenue_payments_created ON revenue_payments (kind, created, id, failed);
