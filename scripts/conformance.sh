#!/usr/bin/env bash
# Runs the RealWorld conformance suites against the demo app: the Hurl suite
# (13 files) and the classic Postman collection (with newman). Exits non-zero
# if any assertion fails.
#
# Installs what is missing: hurl with `cargo install` (after Debian's
# libcurl4-openssl-dev and libclang-dev when run as root), newman with npm
# into target/newman. Builds the app (debug), starts it on a free loopback
# port against a fresh database
# `demo_conformance` on the server scripts/db.sh finds, runs both suites,
# stops the app with SIGTERM (which must shut it down cleanly) and drops the
# database.
#
# CONFORMANCE_BUILD=tests (what scripts/test.sh sets) builds the app with
# `cargo test --workspace --no-run` instead of `cargo build -p demo-app`: the
# test step then reuses every artifact, where a build of demo-app alone would
# resolve other features for shared dependencies and compile them twice.
set -euo pipefail

cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
HURL_VERSION=8.0.1
NEWMAN_VERSION=6
DB_NAME=demo_conformance
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
WORK=$ROOT/target/conformance

step() { printf '\n==> %s\n' "$*" >&2; }
log() { printf 'conformance.sh: %s\n' "$*" >&2; }
is_root() { [[ $(id -u) == 0 ]]; }

apt_install() {
    if ! is_root || ! command -v apt-get >/dev/null 2>&1; then
        log "missing Debian packages $*: install them (as root: apt-get install $*)"
        return 1
    fi
    local missing=()
    local package
    for package in "$@"; do
        dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
    done
    ((${#missing[@]} == 0)) && return 0
    log "installing ${missing[*]} with apt-get"
    DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >&2
}

ensure_hurl() {
    export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
    if command -v hurl >/dev/null 2>&1; then
        return 0
    fi
    # hurl 8.1 needs a newer rustc than the project's; 8.0.1 builds with it.
    log "hurl not found; installing hurl $HURL_VERSION with cargo (takes several minutes)"
    apt_install libcurl4-openssl-dev libclang-dev libxml2-dev pkg-config
    cargo install "hurl@$HURL_VERSION" --locked >&2
}

ensure_newman() {
    if [[ -x $ROOT/target/newman/node_modules/.bin/newman ]]; then
        return 0
    fi
    if ! command -v npm >/dev/null 2>&1; then
        apt_install nodejs npm
    fi
    log "installing newman $NEWMAN_VERSION into target/newman"
    npm install --prefix "$ROOT/target/newman" --no-audit --no-fund "newman@$NEWMAN_VERSION" >&2
}

cleanup() {
    demo_app_stop >/dev/null 2>&1 || true
    app_db_drop "$DB_NAME" >/dev/null 2>&1 || true
    db_stop_if_private
}

step "tools"
ensure_hurl
ensure_newman
log "$(hurl --version | head -n 1), newman $("$ROOT/target/newman/node_modules/.bin/newman" --version)"

step "database"
# shellcheck source=scripts/db.sh
source scripts/db.sh || {
    log "no PostgreSQL database (reasons above)"
    exit 1
}
# shellcheck source=scripts/app_db.sh
source scripts/app_db.sh
# shellcheck source=scripts/demo_app.sh
source scripts/demo_app.sh
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
app_db_recreate "$DB_NAME"

if [[ ${CONFORMANCE_BUILD:-} == tests ]]; then
    step "cargo test --workspace --no-run (builds demo-app too)"
    cargo test --workspace --no-run
else
    step "cargo build -p demo-app"
    cargo build -p demo-app
fi

step "start demo-app"
mkdir -p "$WORK"
demo_app_start "$TARGET_DIR/debug/demo-app" "$WORK/app.log" \
    DATABASE_URL="$(app_db_url "$DB_NAME")" JWT_SECRET=conformance RUST_LOG=info
log "demo-app is answering at $DEMO_APP_URL (log: $WORK/app.log)"

failed=()

step "Hurl suite (demo-app/conformance/hurl-latest)"
if ! HOST=$DEMO_APP_URL bash demo-app/conformance/hurl-latest/run-api-tests-hurl.sh; then
    failed+=(hurl)
fi

step "Postman suite with newman (demo-app/conformance/postman-classic)"
# The script runs `npx newman`, which finds newman in the current
# directory's node_modules. A zero delay makes newman fail while the script
# exits 0, so 1 ms.
if ! (cd "$ROOT/target/newman" && APIURL="$DEMO_APP_URL/api" DELAY_REQUEST=1 \
    bash "$ROOT/demo-app/conformance/postman-classic/run-api-tests.sh" \
    --reporter-cli-no-success-assertions --reporter-cli-no-console 2>&1); then
    failed+=(newman)
fi

step "stop demo-app"
if ! demo_app_stop; then
    log "demo-app did not shut down cleanly on SIGTERM; last lines of its log:"
    tail -n 20 -- "$WORK/app.log" >&2
    failed+=(shutdown)
fi

if ((${#failed[@]} > 0)); then
    log "FAILED: ${failed[*]}"
    exit 1
fi
log "passed: Hurl suite (13 files) and Postman suite"
