-- How many customers pay (stored MRR above zero), kept as rows change instead of counted per
-- request: the Revenue page's pager counted ~45k index entries of revenue_customers on every
-- load at 50k customers. Kept by triggers like migration 0034's counts (a +1 / -1 row appended
-- per change, folded by housekeeping), so the history rewrite and the incremental updates keep
-- it right without knowing about it. The reader subtracts the few rows a scheduled movement has
-- overtaken (see revenue::drill::by_mrr_now).
CREATE TABLE revenue_customer_counts (
    kind TEXT NOT NULL,
    n    BIGINT NOT NULL
);
CREATE INDEX revenue_customer_counts_key ON revenue_customer_counts (kind);
INSERT INTO revenue_customer_counts (kind, n)
SELECT 'paying', COUNT(*) FROM revenue_customers WHERE mrr > 0;

CREATE FUNCTION revenue_customer_counts_track() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        IF OLD.mrr > 0 THEN
            INSERT INTO revenue_customer_counts (kind, n) VALUES ('paying', -1);
        END IF;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        IF NEW.mrr > 0 THEN
            INSERT INTO revenue_customer_counts (kind, n) VALUES ('paying', 1);
        END IF;
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER revenue_customer_counts_insert_delete AFTER INSERT OR DELETE ON revenue_customers
FOR EACH ROW EXECUTE FUNCTION revenue_customer_counts_track();
CREATE TRIGGER revenue_customer_counts_update AFTER UPDATE OF mrr ON revenue_customers
FOR EACH ROW WHEN ((OLD.mrr > 0) IS DISTINCT FROM (NEW.mrr > 0))
EXECUTE FUNCTION revenue_customer_counts_track();

-- The history rewrite empties the table with TRUNCATE, which fires no row trigger. It holds
-- the table's exclusive lock, so no other transaction has a change of it in flight.
CREATE FUNCTION revenue_customer_counts_reset() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM revenue_customer_counts;
    RETURN NULL;
END
$$;
CREATE TRIGGER revenue_customer_counts_truncate AFTER TRUNCATE ON revenue_customers
FOR EACH STATEMENT EXECUTE FUNCTION revenue_customer_counts_reset();
