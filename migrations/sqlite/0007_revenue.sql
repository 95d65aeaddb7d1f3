-- Revenue from Stripe.

-- Stripe objects as Stripe sent them (raw JSON), one row per object. `version` is the
-- `created` time (ms) of the event that last changed the object, or the time a sync read it;
-- an event older than what is stored never overwrites it, so out-of-order webhooks are safe.
CREATE TABLE stripe_objects (
    object_type TEXT NOT NULL,
    id          TEXT NOT NULL,
    customer_id TEXT,
    created     BIGINT NOT NULL,
    version     BIGINT NOT NULL,
    data        TEXT NOT NULL,
    PRIMARY KEY (object_type, id)
);
CREATE INDEX stripe_objects_customer ON stripe_objects (customer_id, object_type);
CREATE INDEX stripe_objects_created ON stripe_objects (object_type, created);

-- Every state of a subscription opsdeck has seen, from the moment it began (`state_at`): read
-- by a sync (`start`, `sync`), carried by a webhook event (`event`), or rebuilt from an
-- invoice's lines for the time before opsdeck was installed (`invoice`). Each state is stored
-- already valued, one row per moment its MRR is set (`at`: its start, and where a discount
-- starts or ends), in the subscription's currency (micro-minor units), so a full MRR recompute
-- reads small rows instead of parsing every subscription again. Event states keep the object
-- (`data`, on their first row) because nothing else could rebuild them.
CREATE TABLE stripe_subscription_states (
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

-- Deliveries by event id (webhooks and the /v1/events catch-up): idempotency and the log.
CREATE TABLE stripe_events (
    id          TEXT NOT NULL PRIMARY KEY,
    type        TEXT NOT NULL,
    created     BIGINT NOT NULL,
    received_at BIGINT NOT NULL,
    via         TEXT NOT NULL,
    outcome     TEXT NOT NULL,
    detail      TEXT
);
CREATE INDEX stripe_events_received ON stripe_events (received_at);

-- Progress of the last sync, per resource.
CREATE TABLE stripe_sync (
    resource    TEXT NOT NULL PRIMARY KEY,
    state       TEXT NOT NULL,
    fetched     BIGINT NOT NULL,
    started_at  BIGINT NOT NULL,
    finished_at BIGINT,
    error       TEXT
);

-- The MRR history in the reporting currency (micro-minor units), recomputed from the
-- subscription states: totals at the end of each UTC day, and each customer's movement.
CREATE TABLE revenue_days (
    day                   BIGINT NOT NULL PRIMARY KEY,
    mrr                   BIGINT NOT NULL,
    customers             BIGINT NOT NULL,
    subscriptions         BIGINT NOT NULL,
    new                   BIGINT NOT NULL,
    expansion             BIGINT NOT NULL,
    contraction           BIGINT NOT NULL,
    churn                 BIGINT NOT NULL,
    reactivation          BIGINT NOT NULL,
    new_customers         BIGINT NOT NULL,
    churned_customers     BIGINT NOT NULL,
    reactivated_customers BIGINT NOT NULL
);
-- Keyed by customer first: the recompute writes them in that order (an append), a
-- customer's page reads them as one range, and the churn cohort looks up each churned
-- customer's earlier movements; a period's movements are read through the day index.
CREATE TABLE revenue_movements (
    customer_id TEXT NOT NULL,
    day         BIGINT NOT NULL,
    kind        TEXT NOT NULL,
    amount      BIGINT NOT NULL,
    -- The day the customer's current paying spell began (their last new or reactivation),
    -- so a period's churn can count only customers already paying when it began.
    since       BIGINT NOT NULL,
    PRIMARY KEY (customer_id, day)
) WITHOUT ROWID;
CREATE INDEX revenue_movements_day ON revenue_movements (day);
CREATE INDEX revenue_movements_kind ON revenue_movements (kind, day, since);
-- Each customer's MRR now (the sum of their movements), for the top-customers table without
-- summing the whole movement history on every page view.
CREATE TABLE revenue_customers (
    customer_id TEXT NOT NULL PRIMARY KEY,
    mrr         BIGINT NOT NULL,
    first_day   BIGINT NOT NULL,
    last_day    BIGINT NOT NULL
);
CREATE INDEX revenue_customers_mrr ON revenue_customers (mrr);

-- Money movements read off the stored objects, for the payment figures: payment intents
-- (success rate), charges (revenue, by whether an invoice of a subscription paid them),
-- refunds and disputes (with the disputed charge's date: dispute rate counts by charge date,
-- dispute activity by dispute date), and invoices. Amounts in the object's own currency.
CREATE TABLE revenue_payments (
    kind           TEXT NOT NULL,
    id             TEXT NOT NULL,
    customer_id    TEXT,
    created        BIGINT NOT NULL,
    status         TEXT NOT NULL,
    amount         BIGINT NOT NULL,
    currency       TEXT NOT NULL,
    failed         BIGINT NOT NULL,
    recurring      BIGINT NOT NULL,
    charge_created BIGINT,
    PRIMARY KEY (kind, id)
);
CREATE INDEX revenue_payments_created ON revenue_payments (kind, created);
CREATE INDEX revenue_payments_customer ON revenue_payments (customer_id, created);
-- Covers a period's payment figures and margin's revenue per customer in one range scan.
CREATE INDEX revenue_payments_time ON revenue_payments (created, kind, status, failed, recurring, currency, amount, customer_id);

-- Daily sums of those payments per currency, kept up to date as each payment is stored (the
-- change from its previous version), so a period's payment figures read one row a day:
-- payment intents succeeded/failed, successful charges and their amount, refunds and their
-- amount, disputes opened and the amount lost, paid subscription invoices' amount (by the
-- object's day), and disputes by the day of the disputed charge.
CREATE TABLE revenue_payment_days (
    day                 BIGINT NOT NULL,
    currency            TEXT NOT NULL,
    intents_succeeded   BIGINT NOT NULL,
    intents_failed      BIGINT NOT NULL,
    charges             BIGINT NOT NULL,
    charged             BIGINT NOT NULL,
    refunds             BIGINT NOT NULL,
    refunded            BIGINT NOT NULL,
    disputes_opened     BIGINT NOT NULL,
    disputes_lost       BIGINT NOT NULL,
    recurring           BIGINT NOT NULL,
    disputes_on_charges BIGINT NOT NULL,
    PRIMARY KEY (day, currency)
);

-- Exchange rates: reporting-currency units per unit of `currency` on `day`, scaled by 10^9.
CREATE TABLE fx_rates (
    currency TEXT NOT NULL,
    day      BIGINT NOT NULL,
    rate     BIGINT NOT NULL,
    source   TEXT NOT NULL,
    PRIMARY KEY (currency, day)
);
