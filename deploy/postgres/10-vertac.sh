#!/bin/sh
# First start of the postgres container (docker-entrypoint-initdb.d): VerTac's services connect
# as "vertac", a role without superuser rights that owns VerTac's database and nothing else, with
# the password `vertac deploy init` put in .env; TCP connections from then on must use TLS.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
     -v pw="$VERTAC_DB_PASSWORD" -v db="$POSTGRES_DB" <<'SQL'
SELECT 'CREATE ROLE vertac LOGIN'
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'vertac') \gexec
ALTER ROLE vertac LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'pw';
ALTER DATABASE :"db" OWNER TO vertac;
ALTER SCHEMA public OWNER TO vertac;
SQL
if [ -f "$PGDATA/pg_hba.conf" ]; then
    sed -i 's/^host all all all /hostssl all all all /' "$PGDATA/pg_hba.conf"
fi
