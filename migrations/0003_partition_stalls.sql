-- Partitions whose counting stopped at a record batch the aggregator cannot decode, and the
-- ranges an operator skipped past on purpose. Nothing is ever skipped without a row here.

-- One row per stalled partition, written by the aggregator that owns it; the flush that moves
-- the partition's offset past the stall deletes it. Readiness checks and `dev status` read it.
CREATE TABLE partition_stalls (
    group_id       text        NOT NULL,
    topic          text        NOT NULL,
    partition      integer     NOT NULL CHECK (partition >= 0),
    stalled_offset bigint      NOT NULL CHECK (stalled_offset >= 0),
    reason         text        NOT NULL,
    stalled_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (group_id, topic, partition)
);

-- What `distcount skip` moved past: records in [from_offset, to_offset) were never counted.
CREATE TABLE skipped_ranges (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    group_id    text        NOT NULL,
    topic       text        NOT NULL,
    partition   integer     NOT NULL CHECK (partition >= 0),
    from_offset bigint      NOT NULL CHECK (from_offset >= 0),
    to_offset   bigint      NOT NULL CHECK (to_offset > from_offset),
    reason      text        NOT NULL,
    skipped_at  timestamptz NOT NULL DEFAULT now()
);
