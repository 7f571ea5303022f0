#!/usr/bin/env bash
# A private PostgreSQL cluster for the `postgres` tests and bench: no system service, a temp dir,
# a Unix socket in that dir and a local port. Works as root (CI): PostgreSQL refuses to run as
# root, so the server runs as the `postgres` user, which owns the dir.
#
#   .ci/postgres.sh start DIR     initdb (once) and start; prints the URL to export as TOLLGATE_PG_URL
#   .ci/postgres.sh restart DIR   fast restart (the tests use it to cut every connection)
#   .ci/postgres.sh stop DIR
#
# Installs PostgreSQL from Debian's packages when `initdb`/`pg_ctl` are missing.
set -euo pipefail
cmd="${1:?start|restart|stop}"
dir="${2:?a directory for the cluster}"
port="${TOLLGATE_PG_PORT:-54329}"

bin=""
for candidate in /usr/lib/postgresql/*/bin; do
    [ -x "$candidate/pg_ctl" ] && bin="$candidate"
done
if [ -z "$bin" ] && ! command -v pg_ctl >/dev/null; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    else
        echo "postgresql is not installed (apt-get install postgresql, as root)" >&2
        exit 1
    fi
    for candidate in /usr/lib/postgresql/*/bin; do
        [ -x "$candidate/pg_ctl" ] && bin="$candidate"
    done
fi
[ -n "$bin" ] || bin="$(dirname "$(command -v pg_ctl)")"

# Run as the `postgres` user when we are root; as ourselves otherwise.
as_owner() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

case "$cmd" in
start)
    mkdir -p "$dir"
    [ "$(id -u)" = 0 ] && chown postgres: "$dir"
    if [ ! -f "$dir/data/PG_VERSION" ]; then
        as_owner "$bin/initdb" -D "$dir/data" -U tollgate --auth=trust -E UTF8 --no-locale >"$dir/initdb.log"
    fi
    as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
        -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=200" start >/dev/null
    as_owner "$bin/createdb" -h "$dir" -p "$port" -U tollgate tollgate 2>/dev/null || true
    echo "postgresql://tollgate@127.0.0.1:$port/tollgate"
    ;;
restart)
    as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w restart >/dev/null
    ;;
stop)
    as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null || true
    ;;
*)
    echo "unknown command $cmd" >&2
    exit 2
    ;;
esac
