-- Stream results, a record of their own (they were rows of dn_events before), read back
-- for replay by the primary key (client_id, seq): a reconnecting client's replay reads
-- the rows it gets, not its whole history.
CREATE TABLE dn_results (
    client_id       text COLLATE "C" NOT NULL,
    seq             bigint NOT NULL,
    event_partition integer NOT NULL,
    event_offset    bigint NOT NULL,
    event_name      text NOT NULL,
    number          integer NOT NULL,
    value           integer,
    error           text,
    received_ns     bigint NOT NULL,
    processed_ns    bigint NOT NULL,
    processor_id    text NOT NULL,
    PRIMARY KEY (client_id, seq),
    CHECK ((value IS NULL) <> (error IS NULL))
);
CREATE INDEX dn_results_processed ON dn_results (processed_ns);

-- Results written as events by schema version 1 move to dn_results.
INSERT INTO dn_results
SELECT source_id,
       coalesce((payload->>'seq')::bigint, split_part(id, '/', 3)::bigint + 1),
       split_part(id, '/', 2)::integer,
       split_part(id, '/', 3)::bigint,
       coalesce(payload->>'event_name', ''),
       coalesce((payload->>'number')::integer, 0),
       (payload->>'result')::integer,
       CASE WHEN payload ? 'result' THEN NULL ELSE coalesce(payload->>'error', '') END,
       coalesce((payload->>'received_ns')::bigint, ts),
       ts,
       coalesce(payload->>'processor_id', '')
FROM dn_events
WHERE payload->>'kind' = 'result' AND id LIKE 'result/%/%'
ON CONFLICT (client_id, seq) DO NOTHING;
DELETE FROM dn_events WHERE payload->>'kind' = 'result' AND id LIKE 'result/%/%';

CREATE VIEW dn_results_v AS
SELECT client_id, seq, event_name, number, value, error,
       to_timestamp(processed_ns / 1e9) AS processed_at, processor_id
FROM dn_results;
