-- Raw frames partitioned by the UTC day of their first sample, so that raw retention
-- (VERTAC_RAW_RETENTION_DAYS) drops whole partitions and never deletes rows. Ingest creates a
-- day's partition ahead of time (and on demand for a frame of another day); frames already
-- stored move into their days' partitions here.

CREATE OR REPLACE FUNCTION vertac_frames_partition(day date) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    name text := 'live_frames_' || to_char(day, 'YYYYMMDD');
    lo bigint := (day - date '1970-01-01')::bigint * 86400000000000;
BEGIN
    IF to_regclass(name) IS NULL THEN
        EXECUTE format(
            'CREATE TABLE IF NOT EXISTS %I PARTITION OF live_frames FOR VALUES FROM (%s) TO (%s)',
            name, lo, lo + 86400000000000);
        -- the payload is compressed already: keep PostgreSQL from trying again
        EXECUTE format('ALTER TABLE %I ALTER COLUMN payload SET STORAGE EXTERNAL', name);
    END IF;
    RETURN name;
END
$$;

ALTER TABLE live_frames RENAME TO live_frames_unpartitioned;
ALTER INDEX live_frames_pkey RENAME TO live_frames_unpartitioned_pkey;
ALTER INDEX live_frames_time RENAME TO live_frames_unpartitioned_time;

CREATE TABLE live_frames (
    stream_id   text   NOT NULL,
    seq         bigint NOT NULL,
    t_first_ns  bigint NOT NULL,
    t_last_ns   bigint NOT NULL,
    n_samples   integer NOT NULL,
    n_sensors   integer NOT NULL,
    payload     bytea  NOT NULL,
    received_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- a partitioned table's key holds its partition key; a frame sent again has the same seq
    -- and the same first sample, so (stream_id, seq) stays unique in effect
    PRIMARY KEY (stream_id, seq, t_first_ns)
) PARTITION BY RANGE (t_first_ns);
CREATE INDEX live_frames_time ON live_frames (stream_id, t_first_ns);

SELECT vertac_frames_partition(day)
FROM (
    SELECT DISTINCT date '1970-01-01' + floor(t_first_ns / 86400000000000.0)::int AS day
    FROM live_frames_unpartitioned
) days;
INSERT INTO live_frames
SELECT stream_id, seq, t_first_ns, t_last_ns, n_samples, n_sensors, payload, received_at
FROM live_frames_unpartitioned;
DROP TABLE live_frames_unpartitioned;
