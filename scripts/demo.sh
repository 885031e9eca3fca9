#!/usr/bin/env bash
# Runs the demo app, the RealWorld ("Conduit") API, on this machine:
# finds or starts PostgreSQL (scripts/db.sh; on a fresh Debian machine as
# root it installs it), creates the database `conduit` if it is missing,
# builds and starts the server, which migrates the schema at start-up and
# then prints the URL it serves at ("serving at http://HOST:PORT/api", the
# port actually bound, also with PORT=0). Ctrl-C stops the server, and the
# private PostgreSQL cluster if this script started one.
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

app_db_create conduit
DATABASE_URL=$(app_db_url conduit)
export DATABASE_URL

cargo build --release -p demo-app
# The URL comes from the server: only it knows the port it bound.
printf '\nStarting the Conduit API: it prints "serving at <URL>" once it is listening; Ctrl-C stops it.\n\n' >&2
# In the background, not exec'd: the EXIT trap must run after the server
# stops, and bash runs traps only between foreground commands, so a SIGTERM
# sent to this script would otherwise wait for the server instead of
# stopping it. Ctrl-C and SIGTERM are passed on; the server shuts down
# gracefully and its exit status becomes this script's.
cargo run --release -q -p demo-app &
server=$!
trap 'kill -INT "$server" 2>/dev/null' INT
trap 'kill -TERM "$server" 2>/dev/null' TERM
status=0
wait "$server" || status=$?
# A signal interrupts `wait` before the server has finished shutting down.
while kill -0 "$server" 2>/dev/null; do
    status=0
    wait "$server" || status=$?
done
exit "$status"
