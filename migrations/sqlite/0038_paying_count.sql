-- How many customers pay (stored MRR above zero), kept as rows change instead of counted per
-- request: the Revenue page's pager counted ~45k index entries of revenue_customers on every
-- load at 50k customers. Kept by triggers like migration 0034's counts, so the history rewrite
-- and the incremental updates keep it right without knowing about it. The reader subtracts the
-- few rows a scheduled movement has overtaken (see revenue::drill::by_mrr_now).
CREATE TABLE revenue_customer_counts (
    kind TEXT NOT NULL PRIMARY KEY,
    n    BIGINT NOT NULL
) WITHOUT ROWID;
INSERT INTO revenue_customer_counts (kind, n)
SELECT 'paying', COUNT(*) FROM revenue_customers WHERE mrr > 0;

CREATE TRIGGER revenue_customer_counts_insert AFTER INSERT ON revenue_customers
WHEN NEW.mrr > 0
BEGIN
    INSERT INTO revenue_customer_counts (kind, n) VALUES ('paying', 1)
    ON CONFLICT (kind) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER revenue_customer_counts_delete AFTER DELETE ON revenue_customers
WHEN OLD.mrr > 0
BEGIN
    UPDATE revenue_customer_counts SET n = n - 1 WHERE kind = 'paying';
END;
CREATE TRIGGER revenue_customer_counts_update AFTER UPDATE OF mrr ON revenue_customers
WHEN (OLD.mrr > 0) <> (NEW.mrr > 0)
BEGIN
    UPDATE revenue_customer_counts SET n = n + (CASE WHEN NEW.mrr > 0 THEN 1 ELSE -1 END)
    WHERE kind = 'paying';
END;
