-- Customers per plan, kept as assignments change instead of counted per request: the plan list
-- (on the Overview and in Settings), the assignments pager and the margin's freshness stamp
-- counted up to 50k index entries of customer_plans on every load (1.6-3.8 ms each at 50k
-- customers). Kept by triggers like migration 0034's counts, so every writer keeps them right.
CREATE TABLE customer_plan_counts (
    plan_id TEXT NOT NULL PRIMARY KEY,
    n       BIGINT NOT NULL
) WITHOUT ROWID;
INSERT INTO customer_plan_counts (plan_id, n)
SELECT plan_id, COUNT(*) FROM customer_plans GROUP BY plan_id;

CREATE TRIGGER customer_plan_counts_insert AFTER INSERT ON customer_plans
BEGIN
    INSERT INTO customer_plan_counts (plan_id, n) VALUES (NEW.plan_id, 1)
    ON CONFLICT (plan_id) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER customer_plan_counts_delete AFTER DELETE ON customer_plans
BEGIN
    UPDATE customer_plan_counts SET n = n - 1 WHERE plan_id = OLD.plan_id;
END;
CREATE TRIGGER customer_plan_counts_update AFTER UPDATE OF plan_id ON customer_plans
WHEN OLD.plan_id <> NEW.plan_id
BEGIN
    UPDATE customer_plan_counts SET n = n - 1 WHERE plan_id = OLD.plan_id;
    INSERT INTO customer_plan_counts (plan_id, n) VALUES (NEW.plan_id, 1)
    ON CONFLICT (plan_id) DO UPDATE SET n = n + 1;
END;
