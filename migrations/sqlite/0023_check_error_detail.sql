-- What a failed check's peer said, apart from the reason. `error` holds the reason anyone who
-- may read the monitor sees (the status, which condition failed); `error_detail` the same with
-- a body excerpt, the value a condition read or a provider's own message, shown to
-- administrators only. NULL when the reason says it all, so passing checks store nothing more.
ALTER TABLE check_results ADD COLUMN error_detail TEXT;
