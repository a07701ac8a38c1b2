#!/bin/sh
# The official postgres image's contract, minimally: initialise PGDATA on first start with
# POSTGRES_USER (default postgres) / POSTGRES_PASSWORD (required) / POSTGRES_DB, listen on all addresses.
set -eu
if [ "${1:-}" = postgres ] && [ ! -s "$PGDATA/PG_VERSION" ]; then
  : "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD must be set}"
  user=${POSTGRES_USER:-postgres}
  pw=$(mktemp); printf '%s\n' "$POSTGRES_PASSWORD" > "$pw"
  # UTF8 as the official image (its locale is en_US.utf8): with the minimal image's default, SQL_ASCII,
  # psycopg 3 returns bytes and SQLAlchemy (MLflow's store) fails on the server version.
  initdb -D "$PGDATA" -U "$user" --pwfile="$pw" -E UTF8 --locale=C.UTF-8 --auth-local=trust --auth-host=scram-sha-256 >/dev/null
  rm -f "$pw"
  echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
  db=${POSTGRES_DB:-$user}
  if [ "$db" != postgres ]; then
    pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
    psql -v ON_ERROR_STOP=1 -U "$user" -d postgres -c "CREATE DATABASE \"$db\"" >/dev/null
    pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
  fi
fi
if [ "${1:-}" = postgres ]; then shift; exec postgres -c listen_addresses='*' "$@"; fi
exec "$@"
