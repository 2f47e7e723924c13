#!/bin/sh
# Stands in for the postgres image's docker-entrypoint.sh, with Debian's PostgreSQL: on an empty data directory
# it creates the cluster with POSTGRES_USER as superuser and POSTGRES_PASSWORD as its password, the database
# POSTGRES_DB (by default named as the user), runs /docker-entrypoint-initdb.d/*.sql once, then runs the server as the postgres user on every address (password
# required over the network, as the image's "host all all all scram-sha-256" line asks).
set -eu
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
: "${PGDATA:=/var/lib/postgresql/data}"
mkdir -p "$PGDATA" /var/run/postgresql
chown postgres:postgres "$PGDATA" /var/run/postgresql
chmod 700 "$PGDATA"
as_postgres() { runuser -u postgres -- "$@"; }
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  printf '%s\n' "$POSTGRES_PASSWORD" >/tmp/pwfile
  chown postgres /tmp/pwfile
  as_postgres "$bin/initdb" -D "$PGDATA" -U "${POSTGRES_USER:-postgres}" --pwfile=/tmp/pwfile \
    --auth-local=trust --auth-host=scram-sha-256 --no-instructions >/dev/null
  rm -f /tmp/pwfile
  echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
  as_postgres "$bin/pg_ctl" -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
  db="${POSTGRES_DB:-${POSTGRES_USER:-postgres}}"
  if [ "$db" != postgres ]; then
    as_postgres "$bin/psql" -v ON_ERROR_STOP=1 -U "${POSTGRES_USER:-postgres}" -d postgres -q -c "CREATE DATABASE \"$db\""
  fi
  for f in /docker-entrypoint-initdb.d/*.sql; do
    [ -e "$f" ] && as_postgres "$bin/psql" -v ON_ERROR_STOP=1 -U "${POSTGRES_USER:-postgres}" -d postgres -q -f "$f"
  done
  as_postgres "$bin/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null
fi
[ "$1" = postgres ] && shift
exec runuser -u postgres -- "$bin/postgres" -D "$PGDATA" -c listen_addresses='*' "$@"
