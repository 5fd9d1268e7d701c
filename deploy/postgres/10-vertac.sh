#!/bin/sh
# First start of the postgres container (docker-entrypoint-initdb.d): VerTac's services connect
# as "vertac", a role without superuser rights that owns VerTac's database and nothing else, with
# the password `vertac deploy init` put in .env, and each acts as its own role (vertac_ingest,
# ...) that owns its tables only; TCP connections from then on must use TLS.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
     -v pw="$VERTAC_DB_PASSWORD" -v db="$POSTGRES_DB" <<'SQL'
SELECT 'CREATE ROLE vertac LOGIN'
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'vertac') \gexec
ALTER ROLE vertac LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'pw';
ALTER DATABASE :"db" OWNER TO vertac;
ALTER SCHEMA public OWNER TO vertac;
-- each service's role (its tables move to it on the first migration): "vertac" is a member of
-- each and takes one on per service at connect time
SELECT format('CREATE ROLE %I NOLOGIN', r)
  FROM unnest(ARRAY['vertac_ingest', 'vertac_cycles', 'vertac_analysis', 'vertac_alerts',
                    'vertac_gateway']) AS r
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) \gexec
GRANT vertac_ingest, vertac_cycles, vertac_analysis, vertac_alerts, vertac_gateway TO vertac;
SQL
if [ -f "$PGDATA/pg_hba.conf" ]; then
    sed -i 's/^host all all all /hostssl all all all /' "$PGDATA/pg_hba.conf"
fi
