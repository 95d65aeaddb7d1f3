-- Customers known only by their usage plan or their subscriptions get a row in customer_search
-- (no name or email), so a search scans that one table instead of the ids of customer_plans and
-- revenue_customers beside it. From now on a plan assignment and a stored subscription add
-- theirs (revenue::customers::know).
INSERT INTO customer_search (id, name, email, haystack)
SELECT id, NULL, NULL, lower(id) || chr(10) || chr(10)
FROM (SELECT customer_id AS id FROM customer_plans
      UNION SELECT customer_id FROM revenue_customers
      UNION SELECT customer_id FROM stripe_objects
            WHERE object_type = 'subscription' AND customer_id IS NOT NULL) AS known
ON CONFLICT (id) DO NOTHING;
