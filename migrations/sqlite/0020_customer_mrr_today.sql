-- A customer's MRR now is their MRR as of today, not after their latest movement: a coupon
-- that ends next month or a scheduled change is a movement dated in the future. A recompute
-- stores `mrr` and `last_day` as of its own day and, in `next_day`, the day of the customer's
-- first movement after it (NULL when none). Once that day arrives the row is stale: readers
-- correct such rows from the movements and the `mrr` job recomputes.
ALTER TABLE revenue_customers ADD COLUMN next_day BIGINT;
-- The stale rows (next_day <= today) are few and looked up on every read of the table.
CREATE INDEX revenue_customers_next ON revenue_customers (next_day) WHERE next_day IS NOT NULL;
