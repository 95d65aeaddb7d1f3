-- PostgreSQL-only storage settings for the ingest path (fill factor, a block-range index on
-- event time); SQLite has neither and keeps its schema from 0007. This file keeps both
-- dialects' migration numbers in step.
SELECT 1;
