-- Data Nexus PostgreSQL store, schema version 1.
-- Text columns use the "C" collation so that ordering matches the embedded store
-- (byte order); timestamps are nanoseconds since the Unix epoch (bigint).

-- Type and help text of each measurement (of its latest write).
CREATE TABLE dn_measurements (
    measurement text COLLATE "C" PRIMARY KEY,
    kind        text NOT NULL,
    help        text
);

-- One row per series: measurement + field + labels; series_id is the stable xxh3 id
-- (the same number as the embedded store's, as a signed 64-bit integer).
CREATE TABLE dn_series (
    series_id   bigint PRIMARY KEY,
    measurement text COLLATE "C" NOT NULL,
    field       text COLLATE "C" NOT NULL,
    labels      jsonb NOT NULL
);
CREATE INDEX dn_series_measurement_field ON dn_series (measurement, field);
CREATE INDEX dn_series_labels ON dn_series USING gin (labels jsonb_path_ops);

-- Samples: narrow rows, range-partitioned by day. The partitions dn_samples_YYYYMMDD of
-- yesterday, today and the next days are created ahead (retention drops them whole);
-- samples of any other day (backfill, far future) rest in the default partition, from
-- which retention deletes rows.
CREATE TABLE dn_samples (
    series_id bigint NOT NULL,
    ts        bigint NOT NULL,
    value     double precision NOT NULL,
    PRIMARY KEY (series_id, ts)
) PARTITION BY RANGE (ts);
CREATE TABLE dn_samples_default PARTITION OF dn_samples DEFAULT;

-- Raw events (POST /ingest, stream events) and stream results (payload.kind = 'result',
-- source_id = the client id), for GET /data and the replay of results.
CREATE TABLE dn_events (
    id        text COLLATE "C" PRIMARY KEY,
    source_id text COLLATE "C" NOT NULL,
    ts        bigint NOT NULL,
    payload   jsonb NOT NULL
);
CREATE INDEX dn_events_source_ts ON dn_events (source_id, ts, id);
CREATE INDEX dn_events_ts ON dn_events (ts, id);
CREATE INDEX dn_events_payload ON dn_events USING gin (payload jsonb_path_ops);

-- A one-row table a flush writes with synchronous_commit on (see write.rs).
CREATE TABLE dn_flush (
    id         integer PRIMARY KEY,
    flushed_at timestamptz NOT NULL
);

-- For psql, Grafana and dbt: samples with their series and a timestamptz.
CREATE VIEW dn_points AS
SELECT s.measurement,
       s.field,
       s.labels,
       to_timestamp(p.ts / 1e9) AS time,
       p.ts AS ts_ns,
       p.value
FROM dn_samples p
JOIN dn_series s USING (series_id);

CREATE VIEW dn_events_v AS
SELECT id, source_id, to_timestamp(ts / 1e9) AS time, ts AS ts_ns, payload
FROM dn_events;
