-- The read side: history by time, an honest as_of, listing in key order, and rollup.

-- 0: a row as the aggregator flushed it, one bucket of DISTCOUNT_BUCKET_MS; > 0: a row that
-- `distcount compact` merged into a coarser bucket of this width. Rollup moves rows from one to
-- the other inside a transaction, so every sum over a whole coarse bucket stays the same.
ALTER TABLE counter_events
    ADD COLUMN width_ms integer NOT NULL DEFAULT 0 CHECK (width_ms >= 0);

-- The indexes keep each width's rows apart. Rollup deletes old rows of one width and writes
-- their sums at another, later in its own part of the index: the pages it empties are emptied
-- whole, and vacuum gives them back. With the width after the time, each merged row would land
-- among the rows it replaced and keep a page nearly empty for good (an index growing a page per
-- key and day). History reads one key's range per width, the busiest counters one time range
-- per width, and rollup walks each width in time order.
DROP INDEX counter_events_key_bucket_idx;
CREATE INDEX counter_events_key_width_bucket_idx ON counter_events (key, width_ms, bucket_start);
CREATE INDEX counter_events_width_bucket_idx ON counter_events (width_ms, bucket_start);

-- The widths rollup has written (0, the flushed width, is always there and not listed): what
-- the reads above walk. Rollup adds a width in the transaction of its first merge into it.
CREATE TABLE counter_widths (
    width_ms integer PRIMARY KEY CHECK (width_ms > 0)
);

-- Per partition, a time before which every record acknowledged to a producer is in the data
-- (see the aggregator's checkpoint): the flush that stores the offset stores it too.
ALTER TABLE consumer_offsets ADD COLUMN as_of timestamptz;

-- Listing in byte order, whatever the database's collation: stable cursors, cheap prefixes.
CREATE INDEX counter_totals_key_bytes_idx ON counter_totals (key COLLATE "C");
