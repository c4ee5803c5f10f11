-- Sums never overflow: a total (or a bucket's delta) may pass the 64-bit range that one increment
-- is limited to, so both are kept as exact arbitrary-precision integers instead of bigint.
ALTER TABLE counter_events ALTER COLUMN delta TYPE numeric(1000, 0);
ALTER TABLE counter_totals ALTER COLUMN value TYPE numeric(1000, 0);
