#!/usr/bin/env bash
# Runs the RealWorld conformance suites against the demo app: the Hurl suite
# (13 files) and the classic Postman collection (with newman). Exits non-zero
# if any assertion fails.
#
# Installs what is missing: hurl with `cargo install` (after the Debian
# packages it builds against, which root installs when missing and anyone
# else must have), newman with npm into target/newman (root installs npm
# when missing; without npm the Hurl suite still runs, then the run fails
# naming what to install).
#
# Builds the app (debug), starts it on a free loopback port against a fresh
# database `demo_conformance_<pid>` on the server scripts/db.sh finds, runs both
# suites, stops the app with SIGTERM (which must shut it down cleanly) and
# drops the database.
#
# CONFORMANCE_BUILD=tests (what scripts/test.sh sets) builds the app with
# `cargo test --workspace --no-run` instead of `cargo build -p demo-app`: the
# test step then reuses every artifact, where a build of demo-app alone would
# resolve other features for shared dependencies and compile them twice.
#
# CONFORMANCE_VIA_PGBOUNCER=1 (which scripts/test.sh sets for a second run)
# connects the app through PgBouncer in transaction mode, in the ORM's
# unnamed statement mode (`statement_mode=unnamed` in its DATABASE_URL), to
# a database `demo_conformance_pgbouncer`: the PgBouncer at ORM_PGBOUNCER_URL
# if that is set, else one that scripts/pgbouncer.sh starts and this script
# stops.
set -euo pipefail

cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
HURL_VERSION=8.0.1
NEWMAN_VERSION=6
# The pid makes the name this run's own: runs from several checkouts can
# share one server, and one's cleanup must not drop the other's database.
DB_NAME=demo_conformance_$$
VIA_PGBOUNCER=${CONFORMANCE_VIA_PGBOUNCER:-}
[[ -n $VIA_PGBOUNCER ]] && DB_NAME=demo_conformance_pgbouncer_$$
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
WORK=$ROOT/target/conformance
HURL_FILES=13
NEWMAN=$ROOT/target/newman/node_modules/.bin/newman

step() { printf '\n==> %s\n' "$*" >&2; }
log() { printf 'conformance.sh: %s\n' "$*" >&2; }
is_root() { [[ $(id -u) == 0 ]]; }
# shellcheck source=scripts/apt.sh
source scripts/apt.sh

# Makes sure the Debian packages given are installed: those already there
# need nothing, the missing ones are installed with apt-get as root. Returns
# 1, naming them, if some are missing and we cannot install them. Every step
# checks its own result, as callers may run it where errexit is off.
ensure_packages() {
    if ! command -v dpkg-query >/dev/null 2>&1; then
        log "not a Debian system: cannot check for $*; going on (install their equivalents if a build fails)"
        return 0
    fi
    local missing=() package status
    for package in "$@"; do
        status=$(dpkg-query -W -f '${Status}' "$package" 2>/dev/null) || status=
        [[ $status == *" installed" ]] || missing+=("$package")
    done
    ((${#missing[@]} == 0)) && return 0
    apt_install "${missing[@]}"
}

ensure_hurl() {
    export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
    if command -v hurl >/dev/null 2>&1; then
        return 0
    fi
    # hurl 8.1 needs a newer rustc than the project's; 8.0.1 builds with it.
    log "hurl not found; installing hurl $HURL_VERSION with cargo (takes several minutes)"
    ensure_packages libcurl4-openssl-dev libclang-dev libxml2-dev pkg-config || return 1
    if ! cargo install "hurl@$HURL_VERSION" --locked >&2; then
        log "cargo install hurl@$HURL_VERSION failed (output above)"
        return 1
    fi
}

# Installs newman into target/newman. Returns 1, with what to install, if
# npm is missing and cannot be installed, or the installation fails.
ensure_newman() {
    [[ -x $NEWMAN ]] && return 0
    if ! command -v npm >/dev/null 2>&1; then
        if ! is_root; then
            log "npm is missing: install Node.js and npm (Debian, as root: apt-get install nodejs npm), or run this script as root"
            return 1
        fi
        ensure_packages nodejs npm || return 1
    fi
    log "installing newman $NEWMAN_VERSION into target/newman"
    if ! npm install --prefix "$ROOT/target/newman" --no-audit --no-fund "newman@$NEWMAN_VERSION" >&2; then
        log "npm could not install newman (output above)"
        return 1
    fi
}

cleanup() {
    demo_app_stop >/dev/null 2>&1 || true
    app_db_drop "$DB_NAME" >/dev/null 2>&1 || true
    if declare -F pgbouncer_stop_if_started >/dev/null; then
        pgbouncer_stop_if_started
    fi
    db_stop_if_private
}

step "tools"
if ! ensure_hurl; then
    log "FAILED: hurl is needed (reasons above)"
    exit 1
fi
log "$(hurl --version | head -n 1)"
# Without newman the Hurl suite still runs; the run fails at the end.
newman_missing=
if ensure_newman; then
    log "newman $("$NEWMAN" --version)"
else
    newman_missing=yes
fi
hurl_files=(demo-app/conformance/hurl-latest/hurl/*.hurl)
if ((${#hurl_files[@]} != HURL_FILES)); then
    log "FAILED: expected $HURL_FILES Hurl files, found ${#hurl_files[@]} in demo-app/conformance/hurl-latest/hurl"
    exit 1
fi

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
app_url=$(app_db_url "$DB_NAME")
if [[ -n $VIA_PGBOUNCER ]]; then
    if [[ -z ${ORM_PGBOUNCER_URL:-} ]]; then
        # shellcheck source=scripts/pgbouncer.sh
        source scripts/pgbouncer.sh || {
            log "could not start PgBouncer (reasons above)"
            exit 1
        }
    fi
    app_url=$(DATABASE_URL=$ORM_PGBOUNCER_URL app_db_url "$DB_NAME")
    case $app_url in
    postgres://*\?* | postgresql://*\?*) app_url+='&statement_mode=unnamed' ;;
    postgres://* | postgresql://*) app_url+='?statement_mode=unnamed' ;;
    *) app_url+=' statement_mode=unnamed' ;;
    esac
    log "the app connects through PgBouncer: $(_db_redact "$app_url")"
fi

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
    DATABASE_URL="$app_url" JWT_SECRET=conformance RUST_LOG=info
log "demo-app is answering at $DEMO_APP_URL (log: $WORK/app.log)"

failed=()

step "Hurl suite (demo-app/conformance/hurl-latest)"
if ! HOST=$DEMO_APP_URL bash demo-app/conformance/hurl-latest/run-api-tests-hurl.sh; then
    failed+=(hurl)
fi

step "Postman suite with newman (demo-app/conformance/postman-classic)"
if [[ -n $newman_missing ]]; then
    log "skipped: newman is not installed (see above: install Node.js and npm, or run as root)"
    failed+=("newman (not installed: needs Node.js and npm)")
# The script runs `npx newman`, which finds newman in the current
# directory's node_modules. A zero delay makes newman fail while the script
# exits 0, so 1 ms.
elif ! (cd "$ROOT/target/newman" && APIURL="$DEMO_APP_URL/api" DELAY_REQUEST=1 \
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
    log "FAILED: $(printf '%s; ' "${failed[@]}")"
    exit 1
fi
log "passed: Hurl suite ($HURL_FILES files) and Postman suite"
