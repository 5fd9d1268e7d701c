-- Rollups of every stream's sensors per 1 s and 1 min bucket, written by ingest in the same
-- transaction as the frames they summarise, and kept VERTAC_ROLLUP_RETENTION_DAYS (whole UTC
-- days of buckets, by dropping daily partitions). Plain SQL: Grafana's PostgreSQL data source
-- reads the views sensor_rollup_1s and sensor_rollup_1m with $__timeFilter(time).
--
-- n: samples in the bucket; n_bad: samples whose quality is not good (192); n_values: samples
-- with a finite value, which min, max, sum and so the mean are taken over; last/last_ns: the
-- latest sample of the bucket.

CREATE OR REPLACE FUNCTION vertac_day_partition(parent text, day date) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    name text := parent || '_' || to_char(day, 'YYYYMMDD');
BEGIN
    IF to_regclass(name) IS NULL THEN
        EXECUTE format(
            'CREATE TABLE IF NOT EXISTS %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
            name, parent, day::timestamp AT TIME ZONE 'UTC',
            (day + 1)::timestamp AT TIME ZONE 'UTC');
    END IF;
    RETURN name;
END
$$;

CREATE TABLE live_rollup_1s (
    stream_id text NOT NULL,
    sensor_id text NOT NULL,
    bucket    timestamptz NOT NULL,
    n         integer NOT NULL,
    n_bad     integer NOT NULL,
    n_values  integer NOT NULL,
    min       double precision,
    max       double precision,
    sum       double precision NOT NULL,
    last      double precision,
    last_ns   bigint NOT NULL,
    PRIMARY KEY (stream_id, sensor_id, bucket)
) PARTITION BY RANGE (bucket);

CREATE TABLE live_rollup_1m (LIKE live_rollup_1s INCLUDING ALL) PARTITION BY RANGE (bucket);

CREATE VIEW sensor_rollup_1s AS
SELECT stream_id, sensor_id, bucket AS time, min, max,
       sum / nullif(n_values, 0) AS mean, n AS count, last, n_bad AS bad_count
FROM live_rollup_1s;

CREATE VIEW sensor_rollup_1m AS
SELECT stream_id, sensor_id, bucket AS time, min, max,
       sum / nullif(n_values, 0) AS mean, n AS count, last, n_bad AS bad_count
FROM live_rollup_1m;
