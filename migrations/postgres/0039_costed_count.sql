-- How many customers have a provider cost in each month, kept instead of counted per request:
-- the Costs page's pager counted ~50k index entries of usage_months on every load at 50k
-- customers. Kept by the ingest writer's month upsert, which appends a +1 / -1 row per month
-- whose customers crossed zero (folded by housekeeping like migration 0034's counts), not by
-- triggers: a trigger on usage_months, which every commit upserts, cost SQLite ingest
-- 10-18 % at 2 M events stored. Retention deletes a month's rows with the month.
CREATE TABLE usage_month_counts (
    month BIGINT NOT NULL,
    kind  TEXT NOT NULL,
    n     BIGINT NOT NULL
);
CREATE INDEX usage_month_counts_key ON usage_month_counts (month, kind);
INSERT INTO usage_month_counts (month, kind, n)
SELECT month, 'costed', COUNT(*) FROM usage_months WHERE cost_nano > 0 GROUP BY month;
