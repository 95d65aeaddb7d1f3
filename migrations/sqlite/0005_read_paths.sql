-- "Top customers by percent of quota" and the at-risk list read the highest percents of the
-- current period, and every customer with usage this period now has a row here. Each list has
-- an index in its exact order (the tiebreak included), so reading the top rows stops after
-- `LIMIT` entries instead of sorting the period; the at-risk one holds only customers not `ok`.
DROP INDEX quota_states_state;
CREATE INDEX quota_states_ranking ON quota_states (period_start, percent, customer_id);
CREATE INDEX quota_states_at_risk ON quota_states (period_start, percent, customer_id)
    WHERE state <> 'ok';

-- Top customers by calls and by cost this month, likewise with their tiebreak.
DROP INDEX usage_months_calls;
DROP INDEX usage_months_cost;
CREATE INDEX usage_months_calls ON usage_months (month, calls, subject);
CREATE INDEX usage_months_cost ON usage_months (month, cost_nano, subject);

-- Events are only ever read by customer newest first (the recent-events log, paged by
-- sequence); an index in that order reads the newest rows and stops, where (subject, time)
-- had to fetch and sort every event of the customer.
DROP INDEX events_subject_time;
CREATE INDEX events_subject_seq ON events (subject, seq);
