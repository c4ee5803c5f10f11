-- The read side: history by time, an honest as_of, listing in key order, and rollup.

-- 0: a row as the aggregator flushed it, one bucket of DISTCOUNT_BUCKET_MS; > 0: a row that
-- `distcount compact` merged into a coarser bucket of this width. Rollup moves rows from one to
-- the other inside a transaction, so every sum over a whole coarse bucket stays the same.
ALTER TABLE counter_events
    ADD COLUMN width_ms integer NOT NULL DEFAULT 0 CHECK (width_ms >= 0);

-- The busiest counters of a recent window, and rollup's scan of old ranges.
CREATE INDEX counter_events_bucket_idx ON counter_events (bucket_start);

-- Per partition, a time before which every record acknowledged to a producer is in the data
-- (see the aggregator's checkpoint): the flush that stores the offset stores it too.
ALTER TABLE consumer_offsets ADD COLUMN as_of timestamptz;

-- Listing in byte order, whatever the database's collation: stable cursors, cheap prefixes.
CREATE INDEX counter_totals_key_bytes_idx ON counter_totals (key COLLATE "C");
