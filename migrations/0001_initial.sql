-- The first schema: the event log, the totals read by primary key, and the consumers' positions.

-- One row per flushed (bucket, key) delta. Every row is a delta, so a bucket may be written in
-- several parts (a flush in the middle of a bucket, a rebalance) and the sum stays right.
CREATE TABLE counter_events (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    key          text        NOT NULL,
    bucket_start timestamptz NOT NULL,
    delta        bigint      NOT NULL,
    flushed_at   timestamptz NOT NULL DEFAULT now()
);

-- History of one key over a time range.
CREATE INDEX counter_events_key_bucket_idx ON counter_events (key, bucket_start);

-- key -> value, upserted in the flush transaction that writes the events.
CREATE TABLE counter_totals (
    key        text        PRIMARY KEY,
    value      bigint      NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- (group, topic, partition) -> the next offset to read, advanced in the same transaction as the
-- data it covers: the position lives next to the data, which is what makes the flush exactly once.
CREATE TABLE consumer_offsets (
    group_id    text        NOT NULL,
    topic       text        NOT NULL,
    partition   integer     NOT NULL CHECK (partition >= 0),
    next_offset bigint      NOT NULL CHECK (next_offset >= 0),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (group_id, topic, partition)
);
