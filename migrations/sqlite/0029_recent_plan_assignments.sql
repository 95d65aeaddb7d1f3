-- Settings → Plans lists assignments newest first, 200 a page: without an index in that order
-- every page sorted all of them (50k customers on plans after a Stripe sync).
CREATE INDEX customer_plans_recent ON customer_plans (assigned_at DESC, customer_id);
