-- The Integrations page's error log: failed checks across every monitor, newest first, and one
-- monitor's failures. `check_results` is keyed (monitor_id, at), which serves neither order
-- over millions of rows; failures are a small share of all results, so partial indexes over
-- them alone stay small and cost nothing on the writes of passing checks. The queries spell
-- out `verdict = 'down'` literally so that both planners can match these indexes.
CREATE INDEX check_results_failures ON check_results (at, monitor_id) WHERE verdict = 'down';
CREATE INDEX check_results_monitor_failures ON check_results (monitor_id, at) WHERE verdict = 'down';
