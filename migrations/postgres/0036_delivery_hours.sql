-- The webhook endpoints' 24-hour counts (the Webhooks tab and GET /api/v1/webhooks/endpoints)
-- counted every delivery of the last day from the (endpoint, created, state) index. Deliveries
-- are now also counted by endpoint, hour of creation and current state, kept by triggers that
-- append +1 / -1 rows folded by housekeeping (as migration 0034's counts are), so a day is a
-- few rows per hour plus the deliveries of the first, partial hour (webhooks::queue::stats).
CREATE TABLE webhook_delivery_counts (
    endpoint_id BIGINT NOT NULL,
    -- created_at floored to the hour, UTC ms.
    hour        BIGINT NOT NULL,
    state       TEXT NOT NULL,
    n           BIGINT NOT NULL
);
CREATE INDEX webhook_delivery_counts_key ON webhook_delivery_counts (endpoint_id, hour, state);
INSERT INTO webhook_delivery_counts (endpoint_id, hour, state, n)
SELECT endpoint_id, created_at - created_at % 3600000, state, COUNT(*)
FROM webhook_deliveries GROUP BY endpoint_id, created_at - created_at % 3600000, state;

CREATE FUNCTION webhook_delivery_counts_track() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        INSERT INTO webhook_delivery_counts (endpoint_id, hour, state, n)
        VALUES (OLD.endpoint_id, OLD.created_at - OLD.created_at % 3600000, OLD.state, -1);
    END IF;
    IF TG_OP <> 'DELETE' THEN
        INSERT INTO webhook_delivery_counts (endpoint_id, hour, state, n)
        VALUES (NEW.endpoint_id, NEW.created_at - NEW.created_at % 3600000, NEW.state, 1);
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER webhook_delivery_counts_insert_delete AFTER INSERT OR DELETE ON webhook_deliveries
FOR EACH ROW EXECUTE FUNCTION webhook_delivery_counts_track();
CREATE TRIGGER webhook_delivery_counts_update
AFTER UPDATE OF state, endpoint_id, created_at ON webhook_deliveries
FOR EACH ROW
WHEN (OLD.state IS DISTINCT FROM NEW.state OR OLD.endpoint_id IS DISTINCT FROM NEW.endpoint_id
      OR OLD.created_at IS DISTINCT FROM NEW.created_at)
EXECUTE FUNCTION webhook_delivery_counts_track();

-- The delivery list (the Webhooks tab's failed deliveries, GET /api/v1/webhooks/deliveries)
-- newest first by state or by endpoint: each filter walks its own index from the newest.
CREATE INDEX webhook_deliveries_state ON webhook_deliveries (state, id);
CREATE INDEX webhook_deliveries_endpoint_id ON webhook_deliveries (endpoint_id, id);
