-- Problems first. The error log lists degraded checks beside down ones, and a monitor's
-- incidents are its stretches of degraded or down checks, so the partial indexes over failed
-- checks widen from `verdict = 'down'` to `verdict <> 'up'`: still a small share of all
-- results, still nothing written for passing checks. The queries spell out
-- `verdict <> 'up'` literally so that both planners match these indexes.
DROP INDEX check_results_failures;
DROP INDEX check_results_monitor_failures;
CREATE INDEX check_results_problems ON check_results (at, monitor_id) WHERE verdict <> 'up';
CREATE INDEX check_results_monitor_problems ON check_results (monitor_id, at) WHERE verdict <> 'up';

-- The Overview's customers at risk: who had a failed payment in the period. Failures are a
-- small share of payments, so this stays small where a range over every payment of the
-- period would not.
CREATE INDEX revenue_payments_failed ON revenue_payments (created, customer_id) WHERE failed = 1;
