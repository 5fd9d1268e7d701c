-- Day partitions of live_frames and of the rollups. Applied as vertac_ingest with only the
-- schema ingest on its search path, like every migration of this folder: PostgreSQL refuses
-- anything outside what ingest owns. A partition made by anyone else (an administrator's
-- session calling these) still belongs to vertac_ingest.

CREATE OR REPLACE FUNCTION ingest.vertac_day_partition(parent text, day date) RETURNS text
LANGUAGE plpgsql SET search_path = ingest AS $$
DECLARE
    name text := parent || '_' || to_char(day, 'YYYYMMDD');
BEGIN
    IF to_regclass('ingest.' || quote_ident(name)) IS NULL THEN
        EXECUTE format(
            'CREATE TABLE IF NOT EXISTS ingest.%I PARTITION OF ingest.%I FOR VALUES FROM (%L) TO (%L)',
            name, parent, day::timestamp AT TIME ZONE 'UTC',
            (day + 1)::timestamp AT TIME ZONE 'UTC');
        EXECUTE format('ALTER TABLE ingest.%I OWNER TO vertac_ingest', name);
    END IF;
    RETURN name;
END
$$;

CREATE OR REPLACE FUNCTION ingest.vertac_frames_partition(day date) RETURNS text
LANGUAGE plpgsql SET search_path = ingest AS $$
DECLARE
    name text := 'live_frames_' || to_char(day, 'YYYYMMDD');
    lo bigint := (day - date '1970-01-01')::bigint * 86400000000000;
BEGIN
    IF to_regclass('ingest.' || quote_ident(name)) IS NULL THEN
        EXECUTE format(
            'CREATE TABLE IF NOT EXISTS ingest.%I PARTITION OF ingest.live_frames'
            ' FOR VALUES FROM (%s) TO (%s)', name, lo, lo + 86400000000000);
        -- the payload is compressed already: keep PostgreSQL from trying again
        EXECUTE format('ALTER TABLE ingest.%I ALTER COLUMN payload SET STORAGE EXTERNAL', name);
        EXECUTE format('ALTER TABLE ingest.%I OWNER TO vertac_ingest', name);
    END IF;
    RETURN name;
END
$$;

