#!/usr/bin/env bash
# Runs the demo app, the RealWorld ("Conduit") API, on this machine:
# finds or starts PostgreSQL (scripts/db.sh; on a fresh Debian machine as
# root it installs it), creates the database `conduit` if it is missing,
# builds and starts the server (which migrates the schema at start-up) and
# prints its URL. Ctrl-C stops the server, and the private PostgreSQL
# cluster if this script started one.
#
# Environment: PORT (default 8080), HOST (default 127.0.0.1), JWT_SECRET
# (default: random, so tokens stop working at restart), RUST_LOG,
# LOG_FORMAT=json; DATABASE_URL to use a server of your own.
set -euo pipefail

cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.."

# shellcheck source=scripts/db.sh
source scripts/db.sh || {
    printf 'demo.sh: no PostgreSQL database (reasons above)\n' >&2
    exit 1
}
# shellcheck source=scripts/app_db.sh
source scripts/app_db.sh
trap db_stop_if_private EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

app_db_create conduit
DATABASE_URL=$(app_db_url conduit)
export DATABASE_URL
export PORT=${PORT:-8080} HOST=${HOST:-127.0.0.1}

cargo build --release -p demo-app
printf '\nThe Conduit API will be at http://%s:%s/api (the server logs "listening on" when ready; Ctrl-C stops it)\n\n' \
    "$HOST" "$PORT" >&2
# Not exec: the EXIT trap must run after the server stops.
cargo run --release -q -p demo-app
