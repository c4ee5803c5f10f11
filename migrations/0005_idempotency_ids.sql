-- Idempotency ids: a record with an id counts once within a window (DISTCOUNT_IDEMPOTENCY_WINDOW_S).
--
-- The flush that counts a record with an id stores its id here, in the transaction that stores
-- the partition's offset: a retry that arrives after a crash, a rebalance or a fenced flush finds
-- it, whichever partition or process folds it. An id is kept as the MD5 digest of its UTF-8 (a
-- fixed 16 bytes whatever the id's length), with a 32-bit checksum of the increment it counted,
-- to tell a retry from a different increment sent under the same id.
CREATE TABLE counter_ids (
    id          bytea       PRIMARY KEY CHECK (octet_length(id) = 16),
    fingerprint bigint      NOT NULL,
    seen_at     timestamptz NOT NULL DEFAULT now()
);

-- The aggregators delete the ids older than the window. Rows arrive in time order, so a BRIN
-- index finds the old ones for a few pages of its own, where a B-tree would cost every claim
-- an insert more.
CREATE INDEX counter_ids_seen_at_idx ON counter_ids USING brin (seen_at);
