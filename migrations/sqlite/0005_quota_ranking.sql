-- "Top customers by percent of quota" and the at-risk list read the highest percents of the
-- current period; every customer with usage this period now has a row here.
CREATE INDEX quota_states_period_percent ON quota_states (period_start, percent);
