#!/bin/sh
# Make the local consortium's secrets: a consortium CA, certificates for the gateway,
# the three nodes and an operator, and the PostgreSQL password (with the gateway's
# database URL). Idempotent: what exists is kept. Needs the `federation` CLI
# (pip install the project, or FEDERATION="docker run --rm -v $PWD:/w -w /w federation:0.1.0").
#
# The CA key stays in secrets/pki/ca/ca.key: on a real consortium it lives offline with
# the CA's administrator, never next to a running gateway.
set -eu
cd "$(dirname "$0")"
FED=${FEDERATION:-federation}
PKI=secrets/pki
mkdir -p "$PKI"
umask 077

$FED ca init --dir "$PKI/ca" --consortium "${CONSORTIUM:-Local Compose Consortium}"
issue() {  # issue NAME ARGS…: once
  name=$1; shift
  if [ ! -f "$PKI/$name/$name.crt" ]; then
    $FED ca issue --ca-dir "$PKI/ca" "$@" --out "$PKI/$name"
  fi
}
issue gateway --gateway --host gateway --host localhost --host 127.0.0.1
issue city-1 --site city-1 --tier city --host node-city-1
issue county-b --site county-b --tier county --host node-county-b
issue township-a1 --site township-a1 --tier township --host node-township-a1
issue admin --operator admin

if [ ! -f secrets/postgres_password ]; then
  python3 -c 'import secrets; print(secrets.token_urlsafe(24), end="")' > secrets/postgres_password
fi
printf 'postgresql://federation:%s@postgres:5432/federation\n' \
  "$(cat secrets/postgres_password)" > secrets/database_url

# compose bind-mounts file secrets with their host owner and mode; the containers run
# as uid 10001 (postgres as 999), so hand the files to them where we may
if [ "$(id -u)" = 0 ]; then
  chown -R 10001:10001 "$PKI" secrets/database_url
  chown 999:999 secrets/postgres_password
  chmod -R u+rX "$PKI"
else
  echo "note: not root — making secrets readable by the containers (local use only)" >&2
  chmod -R a+rX secrets
fi
chmod 0700 "$PKI/ca"   # the CA key is never mounted into a container
echo "secrets ready in $(pwd)/secrets"
