-- Subscription states that repeat the state before them in everything the MRR engine reads
-- (a renewal's `customer.subscription.updated` that changed nothing), kept aside so a
-- recompute reads only the changes. Same columns as `stripe_subscription_states`; a row moves
-- back when a state delivered late between two identical ones makes it a change again.
CREATE TABLE stripe_subscription_echoes (
    subscription_id TEXT NOT NULL,
    state_at        BIGINT NOT NULL,
    source          TEXT NOT NULL,
    at              BIGINT NOT NULL,
    customer_id     TEXT NOT NULL,
    status          TEXT NOT NULL,
    currency        TEXT NOT NULL,
    mrr             BIGINT NOT NULL,
    data            TEXT,
    PRIMARY KEY (subscription_id, state_at, source, at)
);

-- Only churn movements are looked up by kind (the period's churned customers and their spell
-- start): a partial index holds a tenth of the rows, and a full rewrite of the history builds
-- it in a fraction of the time the (kind, day, since) index took.
DROP INDEX revenue_movements_kind;
CREATE INDEX revenue_movements_churn ON revenue_movements (day, since) WHERE kind = 'churn';
