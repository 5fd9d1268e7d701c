-- Each service owns its tables: one PostgreSQL role and one schema per service.
--
--   ingest    live_streams, live_frames, live_stream_stats, live_rollup_1s, live_rollup_1m
--   cycles    live_cycles, live_dataset_cycles
--   analysis  live_deviations, live_references, live_models
--   alerts    live_alerts, live_alert_history
--   gateway   auth_tokens, audit_log
--
-- A service connects as its role (vertac_<service>) with only its schema and "api" on its
-- search path. It reads and writes its own tables; PostgreSQL refuses every other table. What
-- another service may read, the owner publishes as a read-only view in the schema "api" under
-- the table's own name: the gateway reads them all, analysis those of cycles, alerts the
-- references. Writes across services do not exist: they are commands on the bus.
--
-- The roles are cluster-wide and have no LOGIN: the role VerTac connects as (the database's
-- owner) is a member of each and takes one on at connect time. To give a service credentials
-- of its own: ALTER ROLE vertac_cycles LOGIN PASSWORD '...', and point that service's URL at it.
--
-- Table names do not change: the database's search path holds every service's schema, so
-- scripts, reports and Grafana panels that name live_cycles or sensor_rollup_1s keep working.

DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['vertac_ingest', 'vertac_cycles', 'vertac_analysis',
                             'vertac_alerts', 'vertac_gateway'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I NOLOGIN', r);
            EXCEPTION
                WHEN duplicate_object OR unique_violation THEN NULL;  -- made meanwhile
                WHEN insufficient_privilege THEN
                    RAISE EXCEPTION 'VerTac needs the PostgreSQL role % and may not create it', r
                    USING HINT = format(
                        'as a superuser: CREATE ROLE %I NOLOGIN; GRANT %I TO %I; then migrate again',
                        r, r, current_user);
            END;
        END IF;
        IF NOT pg_has_role(current_user, r, 'MEMBER') THEN
            BEGIN
                EXECUTE format('GRANT %I TO %I', r, current_user);
            EXCEPTION WHEN insufficient_privilege THEN
                RAISE EXCEPTION 'the role % must be a member of the PostgreSQL role %', current_user, r
                USING HINT = format('as a superuser: GRANT %I TO %I; then migrate again', r, current_user);
            END;
        END IF;
    END LOOP;
END
$$;

CREATE SCHEMA IF NOT EXISTS ingest AUTHORIZATION vertac_ingest;
CREATE SCHEMA IF NOT EXISTS cycles AUTHORIZATION vertac_cycles;
CREATE SCHEMA IF NOT EXISTS analysis AUTHORIZATION vertac_analysis;
CREATE SCHEMA IF NOT EXISTS alerts AUTHORIZATION vertac_alerts;
CREATE SCHEMA IF NOT EXISTS gateway AUTHORIZATION vertac_gateway;
CREATE SCHEMA IF NOT EXISTS api;
GRANT USAGE ON SCHEMA api TO vertac_ingest, vertac_cycles, vertac_analysis, vertac_alerts,
    vertac_gateway;

-- every table (partitions included) into its owner's schema, owned by its owner's role
DO $$
DECLARE
    t record;
    owner text;
BEGIN
    FOR t IN
        SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')
          AND c.relname <> 'schema_migrations'
    LOOP
        owner := CASE
            WHEN t.relname IN ('live_streams', 'live_stream_stats') OR t.relname LIKE 'live\_frames%'
                 OR t.relname LIKE 'live\_rollup\_%' THEN 'ingest'
            WHEN t.relname IN ('live_cycles', 'live_dataset_cycles') THEN 'cycles'
            WHEN t.relname IN ('live_deviations', 'live_references', 'live_models') THEN 'analysis'
            WHEN t.relname IN ('live_alerts', 'live_alert_history') THEN 'alerts'
            WHEN t.relname IN ('auth_tokens', 'audit_log') THEN 'gateway'
        END;
        IF owner IS NULL THEN
            RAISE EXCEPTION 'table public.% belongs to no service; move it by hand first', t.relname;
        END IF;
        EXECUTE format('ALTER TABLE public.%I SET SCHEMA %I', t.relname, owner);
        EXECUTE format('ALTER TABLE %I.%I OWNER TO %I', owner, t.relname, 'vertac_' || owner);
    END LOOP;
END
$$;

-- ingest makes and drops its day partitions: the functions are its own, and a partition made
-- by anyone else (an administrator's session) still belongs to the parent's owner
DROP FUNCTION public.vertac_frames_partition(date);
DROP FUNCTION public.vertac_day_partition(text, date);

-- (ingest defines them again in its own schema: services/ingest/migrations)

-- what the owners publish: read-only views under the tables' own names
CREATE VIEW api.live_streams AS SELECT * FROM ingest.live_streams;
CREATE VIEW api.live_stream_stats AS SELECT * FROM ingest.live_stream_stats;
CREATE VIEW api.live_frames AS SELECT * FROM ingest.live_frames;
CREATE VIEW api.live_rollup_1s AS SELECT * FROM ingest.live_rollup_1s;
CREATE VIEW api.live_rollup_1m AS SELECT * FROM ingest.live_rollup_1m;
CREATE VIEW api.live_cycles AS SELECT * FROM cycles.live_cycles;
CREATE VIEW api.live_dataset_cycles AS SELECT * FROM cycles.live_dataset_cycles;
CREATE VIEW api.live_deviations AS SELECT * FROM analysis.live_deviations;
CREATE VIEW api.live_references AS SELECT * FROM analysis.live_references;
CREATE VIEW api.live_alerts AS SELECT * FROM alerts.live_alerts;
CREATE VIEW api.live_alert_history AS SELECT * FROM alerts.live_alert_history;
-- a view's owner is the service whose table it shows (its rights decide what the view reads);
-- taking ownership wants CREATE on the schema, which the services keep only for this moment
GRANT CREATE ON SCHEMA api TO vertac_ingest, vertac_cycles, vertac_analysis, vertac_alerts;
ALTER VIEW api.live_streams OWNER TO vertac_ingest;
ALTER VIEW api.live_stream_stats OWNER TO vertac_ingest;
ALTER VIEW api.live_frames OWNER TO vertac_ingest;
ALTER VIEW api.live_rollup_1s OWNER TO vertac_ingest;
ALTER VIEW api.live_rollup_1m OWNER TO vertac_ingest;
ALTER VIEW api.live_cycles OWNER TO vertac_cycles;
ALTER VIEW api.live_dataset_cycles OWNER TO vertac_cycles;
ALTER VIEW api.live_deviations OWNER TO vertac_analysis;
ALTER VIEW api.live_references OWNER TO vertac_analysis;
ALTER VIEW api.live_alerts OWNER TO vertac_alerts;
ALTER VIEW api.live_alert_history OWNER TO vertac_alerts;
REVOKE CREATE ON SCHEMA api FROM vertac_ingest, vertac_cycles, vertac_analysis, vertac_alerts;
REVOKE ALL ON ALL TABLES IN SCHEMA api FROM PUBLIC;
-- read-only for everyone, their owners too: a service writes its tables, never a view
REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON ALL TABLES IN SCHEMA api
    FROM vertac_ingest, vertac_cycles, vertac_analysis, vertac_alerts;
GRANT SELECT ON ALL TABLES IN SCHEMA api TO vertac_gateway;
GRANT SELECT ON api.live_cycles, api.live_dataset_cycles TO vertac_analysis;
GRANT SELECT ON api.live_references TO vertac_alerts;

-- scripts, reports and Grafana connect without a role: every service's tables by their names
DO $$
BEGIN
    EXECUTE format('ALTER DATABASE %I SET search_path = "$user", public, ingest, cycles, analysis,'
                   ' alerts, gateway', current_database());
END
$$;
SET search_path = "$user", public, ingest, cycles, analysis, alerts, gateway;
