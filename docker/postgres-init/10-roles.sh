#!/bin/sh
# Runs once, when the postgres container initialises an empty data volume, as the superuser.
# The owner role owns the database and runs migrations; the application role (DATABASE_URL of
# web, worker and beat) only reads and writes rows: no superuser, no CREATEROLE/CREATEDB, owns
# nothing, and after `migrate` has no write privilege on the audit trail (README, "Database roles
# and the audit chain").
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -v owner_password="$OWNER_DB_PASSWORD" -v app_password="$APP_DB_PASSWORD" <<'EOSQL'
CREATE ROLE trialsite_owner LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
    PASSWORD :'owner_password';
CREATE ROLE trialsite_app LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS NOINHERIT
    PASSWORD :'app_password';
ALTER DATABASE trialsite OWNER TO trialsite_owner;
ALTER SCHEMA public OWNER TO trialsite_owner;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
EOSQL
