-- Notifiers: a webhook endpoint of a kind (email, webhook, twilio_sms, vonage_sms, slack,
-- discord, pagerduty). Every notification still goes through the delivery queue; the worker
-- shapes the request per kind.

-- Which service the endpoint speaks to; 'webhook' is the Standard Webhooks signed POST.
ALTER TABLE webhook_endpoints ADD COLUMN kind TEXT NOT NULL DEFAULT 'webhook';
-- The kind's non-secret fields as a JSON object (addresses, account ids, API bases). The
-- kind's secret (auth token, API secret, SMTP password, routing key, Slack or Discord URL)
-- is the sealed secret, never here.
ALTER TABLE webhook_endpoints ADD COLUMN settings TEXT NOT NULL DEFAULT '{}';
-- 'config' for `[[notifiers]]` declared in the config file (read-only through the API,
-- re-applied at every start), 'api' otherwise.
ALTER TABLE webhook_endpoints ADD COLUMN source TEXT NOT NULL DEFAULT 'api';
