-- The Overview's open alerts: counted by severity and the most severe few listed, firing before
-- pending, critical first, newest first. With tens of thousands of customers over quota, each an
-- open alert, counting and sorting every open row took ~30 ms of each Overview page; this index
-- serves the counts from its entries alone and each (state, severity) list by walking a few.
-- The queries spell the expression out exactly as here so both planners match it.
CREATE INDEX alerts_by_severity ON alerts (state, severity, (COALESCE(started_at, pending_since)), id);
