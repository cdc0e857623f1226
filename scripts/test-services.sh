#!/usr/bin/env bash
# Real services for tests, on loopback, in the foreground (the caller owns the process and
# kills it): a throw-away PostgreSQL server and an S3-compatible server (moto).
#   scripts/test-services.sh postgres DIR PORT   # initdb in DIR, then exec postgres
#   scripts/test-services.sh s3 DIR PORT         # exec moto_server on 127.0.0.1:PORT
# Both are installed by scripts/setup.sh. PostgreSQL refuses to run as root, so as root
# the cluster belongs to the system user `detvm-test` (created here when missing).
set -euo pipefail
what=${1:?postgres or s3}; dir=${2:?a fresh folder}; port=${3:?a free port}
mkdir -p "$dir"

case "$what" in
postgres)
  bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
  [ -x "$bin/initdb" ] || { echo "PostgreSQL is not installed: run scripts/setup.sh" >&2; exit 1; }
  as=()
  if [ "$(id -u)" -eq 0 ]; then
    id detvm-test >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin detvm-test
    chown detvm-test "$dir"
    # The cluster's owner must reach DIR: DIR's parent is expected to be a temp folder.
    chmod o+x "$(dirname "$dir")"
    as=(setpriv --reuid=detvm-test --regid=detvm-test --clear-groups)
  fi
  if [ ! -f "$dir/PG_VERSION" ]; then
    "${as[@]}" "$bin/initdb" -D "$dir" -U postgres --auth=trust --no-sync -E UTF8 >/dev/null
  fi
  # No durability needed: fsync off makes the tests faster, nothing else changes.
  exec "${as[@]}" "$bin/postgres" -D "$dir" -p "$port" -k "$dir" \
    -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off \
    -c full_page_writes=off -c max_connections=200
  ;;
s3)
  moto=${DETVM_CACHE:-$HOME/.cache/detvm}/moto/bin/moto_server
  [ -x "$moto" ] || { echo "moto is not installed: run scripts/setup.sh" >&2; exit 1; }
  cd "$dir"
  exec "$moto" -H 127.0.0.1 -p "$port"
  ;;
*) echo "unknown service $what (postgres or s3)" >&2; exit 2 ;;
esac
