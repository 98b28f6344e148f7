#!/bin/sh
# Install the federation node agent on a site's Linux PC (Debian/Ubuntu/RHEL family,
# systemd, Python >= 3.11). Run as root:
#
#   sudo ./install.sh --site-id township-a1 --gateway gateway.example.org:50051 \
#        --source-kind csv --source-path /data/exports --pki ./township-a1
#
# It creates the system user 'federation', /etc/federation (config and certificates),
# /var/lib/federation (the node's state), a virtual environment in /opt/federation with
# the federation package, /etc/federation/site.toml from site.toml.template (an existing
# one is never overwritten), installs federation-node.service, enables and starts it,
# and runs `federation node doctor`.
#
# With DESTDIR=/some/dir it only lays the files out under that directory and prints
# what it would run as root (useradd, chown, systemctl): a dry run, and how packagers
# stage a build.
set -eu

usage() {
  sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'
  echo "options: --site-id ID --gateway HOST:PORT --source-kind sql|csv|hl7|pacs"
  echo "         --source-path PATH [--mapping NAME|FILE] [--advertise HOST:PORT]"
  echo "         [--pki DIR (from 'federation ca issue --site ID --out DIR')]"
  echo "         [--package SPEC (default: this checkout)] [--no-venv] [--no-start]"
  exit "${1:-0}"
}

HERE=$(cd "$(dirname "$0")" && pwd)
DESTDIR=${DESTDIR:-}
PREFIX=${PREFIX:-/opt/federation}
PYTHON=${PYTHON:-python3}
PIP_ARGS=${PIP_ARGS:-}
SITE_ID= GATEWAY= KIND= SOURCE= MAPPING= ADVERTISE= PKI= PACKAGE= VENV=yes START=yes

while [ $# -gt 0 ]; do
  case $1 in
    --site-id) SITE_ID=$2; shift 2 ;;
    --gateway) GATEWAY=$2; shift 2 ;;
    --source-kind) KIND=$2; shift 2 ;;
    --source-path) SOURCE=$2; shift 2 ;;
    --mapping) MAPPING=$2; shift 2 ;;
    --advertise) ADVERTISE=$2; shift 2 ;;
    --pki) PKI=$2; shift 2 ;;
    --package) PACKAGE=$2; shift 2 ;;
    --no-venv) VENV=no; shift ;;
    --no-start) START=no; shift ;;
    -h|--help) usage 0 ;;
    *) echo "install.sh: unknown option $1" >&2; usage 2 >&2 ;;
  esac
done

fail() { echo "install.sh: $*" >&2; exit 2; }
[ -n "$SITE_ID" ] || fail "--site-id is required (the site id in this node's certificate)"
[ -n "$GATEWAY" ] || fail "--gateway HOST:PORT is required"
case $KIND in sql|csv|hl7|pacs) ;; *) fail "--source-kind must be sql, csv, hl7 or pacs" ;; esac
[ -n "$SOURCE" ] || fail "--source-path is required"
[ "$KIND" != sql ] || [ -n "$MAPPING" ] || fail "--source-kind sql needs --mapping"
echo "$SITE_ID" | grep -Eq '^[a-z0-9][a-z0-9-]{1,62}$' || fail "--site-id '$SITE_ID' is not a site id"
[ -n "$DESTDIR" ] || [ "$(id -u)" = 0 ] || fail "run as root (or set DESTDIR for a dry run)"

# as root: do it; under DESTDIR: say it
as_root() {
  if [ -n "$DESTDIR" ]; then echo "would run: $*"; else "$@"; fi
}

ETC=$DESTDIR/etc/federation
STATE=$DESTDIR/var/lib/federation
UNITDIR=$DESTDIR/etc/systemd/system

# 1. the user the agent runs as: no shell, no login, owns only its state
if [ -n "$DESTDIR" ] || ! id federation >/dev/null 2>&1; then
  as_root useradd --system --home-dir /var/lib/federation --no-create-home \
    --shell /usr/sbin/nologin --user-group federation
fi

# 2. folders
install -d -m 0750 "$ETC" "$ETC/pki" "$STATE"
install -d -m 0755 "$DESTDIR$PREFIX" "$UNITDIR"
as_root chown root:federation /etc/federation /etc/federation/pki
as_root chown federation:federation /var/lib/federation

# 3. the software, in its own virtual environment
if [ "$VENV" = yes ]; then
  "$PYTHON" -m venv "$DESTDIR$PREFIX"
  # shellcheck disable=SC2086
  "$DESTDIR$PREFIX/bin/pip" install --quiet $PIP_ARGS "${PACKAGE:-$HERE/../..}"
  install -d -m 0755 "$DESTDIR$PREFIX/share"
  install -m 0644 "$HERE/../../README.md" "$DESTDIR$PREFIX/share/README.md"
fi

# 4. certificates (from `federation ca issue --site ID --out DIR`)
if [ -n "$PKI" ]; then
  [ -f "$PKI/$SITE_ID.crt" ] || fail "$PKI/$SITE_ID.crt not found: --pki is the folder 'federation ca issue --site $SITE_ID' wrote"
  install -m 0644 "$PKI/ca.crt" "$ETC/pki/ca.crt"
  install -m 0644 "$PKI/$SITE_ID.crt" "$ETC/pki/node.crt"
  install -m 0640 "$PKI/$SITE_ID.key" "$ETC/pki/node.key"
  [ ! -f "$PKI/crl.pem" ] || install -m 0644 "$PKI/crl.pem" "$ETC/pki/crl.pem"
  as_root chown root:federation /etc/federation/pki/node.key
fi

# 5. the configuration, from the template (never overwriting the site's own)
if [ -f "$ETC/site.toml" ]; then
  echo "keeping the existing $ETC/site.toml"
else
  if [ -n "$MAPPING" ]; then MAPPING_LINE="mapping = \"$MAPPING\""; else MAPPING_LINE="# mapping = \"vendor_a\""; fi
  if [ -n "$ADVERTISE" ]; then ADVERTISE_LINE=$ADVERTISE; else ADVERTISE_LINE=""; fi
  sed -e "s|@SITE_ID@|$SITE_ID|" -e "s|@GATEWAY@|$GATEWAY|" -e "s|@SOURCE_KIND@|$KIND|" \
      -e "s|@SOURCE_PATH@|$SOURCE|" -e "s|@MAPPING_LINE@|$MAPPING_LINE|" \
      -e "s|@ADVERTISE@|$ADVERTISE_LINE|" "$HERE/site.toml.template" > "$ETC/site.toml"
  [ -n "$ADVERTISE" ] || sed -i 's|^advertise = ""|# advertise = "node.example.org:50061"|' "$ETC/site.toml"
  chmod 0640 "$ETC/site.toml"
  as_root chown root:federation /etc/federation/site.toml
fi

# 6. the service
install -m 0644 "$HERE/federation-node.service" "$UNITDIR/federation-node.service"
as_root systemctl daemon-reload
if [ "$START" = yes ]; then
  as_root systemctl enable --now federation-node.service
else
  as_root systemctl enable federation-node.service
fi

# 7. what is still wrong, in plain words
if [ -z "$DESTDIR" ] && [ "$VENV" = yes ]; then
  runuser -u federation -- "$PREFIX/bin/federation" node doctor --config /etc/federation/site.toml || \
    echo "fix what the doctor says, then: systemctl restart federation-node"
else
  echo "then check it: federation node doctor --config /etc/federation/site.toml"
fi
echo "installed federation node agent for site $SITE_ID"
