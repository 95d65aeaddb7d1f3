-- Customers per plan, kept as assignments change instead of counted per request: the plan list
-- (on the Overview and in Settings), the assignments pager and the margin's freshness stamp
-- counted up to 50k index entries of customer_plans on every load. Kept by triggers like
-- migration 0034's counts (a +1 / -1 row appended per change, folded by housekeeping), so
-- concurrent writers never wait on one counter row.
CREATE TABLE customer_plan_counts (
    plan_id TEXT NOT NULL,
    n       BIGINT NOT NULL
);
CREATE INDEX customer_plan_counts_key ON customer_plan_counts (plan_id);
INSERT INTO customer_plan_counts (plan_id, n)
SELECT plan_id, COUNT(*) FROM customer_plans GROUP BY plan_id;

CREATE FUNCTION customer_plan_counts_track() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        INSERT INTO customer_plan_counts (plan_id, n) VALUES (OLD.plan_id, -1);
    END IF;
    IF TG_OP <> 'DELETE' THEN
        INSERT INTO customer_plan_counts (plan_id, n) VALUES (NEW.plan_id, 1);
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER customer_plan_counts_insert_delete AFTER INSERT OR DELETE ON customer_plans
FOR EACH ROW EXECUTE FUNCTION customer_plan_counts_track();
CREATE TRIGGER customer_plan_counts_update AFTER UPDATE OF plan_id ON customer_plans
FOR EACH ROW WHEN (OLD.plan_id IS DISTINCT FROM NEW.plan_id)
EXECUTE FUNCTION customer_plan_counts_track();

-- Nothing empties customer_plans with TRUNCATE today; if something does, the count goes too.
CREATE FUNCTION customer_plan_counts_reset() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM customer_plan_counts;
    RETURN NULL;
END
$$;
CREATE TRIGGER customer_plan_counts_truncate AFTER TRUNCATE ON customer_plans
FOR EACH STATEMENT EXECUTE FUNCTION customer_plan_counts_reset();
