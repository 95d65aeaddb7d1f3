-- The webhook endpoints' 24-hour success counts (the Webhooks tab and the endpoints API) read
-- each delivery row for its state: tens of thousands of lookups once quota alerts fan out. With
-- the state in the (endpoint, created) index the counts are read from the index alone.
DROP INDEX webhook_deliveries_endpoint;
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id, created_at, state);
