#!/usr/bin/env bash
# The project's test command: formatting, lints, the demo app's RealWorld
# conformance suites, then every test (unit, integration and doc tests)
# against a real PostgreSQL found or started by scripts/db.sh, and the TLS
# tests against the TLS-only cluster scripts/tls_db.sh starts, the read
# replica tests against the private primary and streaming replica
# scripts/replica_db.sh starts; part of the
# integration tests and the conformance suites run a second time through
# PgBouncer in transaction mode, started by scripts/pgbouncer.sh. Exits non-zero
# on the first failure. Cargo's test summary is the last thing printed, so
# nothing may write to the terminal after it: the EXIT trap that stops the
# private clusters logs to their directories under target/ instead.
set -euo pipefail

cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.."

step() { printf '\n==> %s\n' "$*" >&2; }

# A one-shot run gains nothing from incremental compilation, whose caches
# would add gigabytes under target/ (6 GiB with full debug info).
export CARGO_INCREMENTAL=0

step "disk space"
# Every test target is built, and three private clusters run under target/.
# A full disk fails the build late and obscurely (an LLVM "IO failure"), so
# say it first.
need_kib=$((8 * 1024 * 1024))
mkdir -p target
free_kib=$(df -Pk target | awk 'NR == 2 { print $4 }')
if [ "${free_kib:-0}" -lt "$need_kib" ]; then
    printf 'test.sh: warning: %s MiB free under target/; a cold run writes about 5 GiB there\n' \
        "$((free_kib / 1024))" >&2
fi

step "database"
# shellcheck source=scripts/db.sh
if ! source scripts/db.sh; then
    printf 'test.sh: no PostgreSQL database to test against (reasons above)\n' >&2
    exit 1
fi
trap 'db_stop_if_private' EXIT
# Without these a signal would kill bash before the EXIT trap runs, leaving
# the private cluster running.
trap 'exit 130' INT
trap 'exit 143' TERM
export DATABASE_URL

step "TLS database"
# shellcheck source=scripts/tls_db.sh
if ! source scripts/tls_db.sh; then
    printf 'test.sh: cannot start the TLS test cluster (reasons above)\n' >&2
    exit 1
fi
trap 'tls_db_stop; db_stop_if_private' EXIT

step "primary and streaming replica (scripts/replica_db.sh)"
# shellcheck source=scripts/replica_db.sh
if ! source scripts/replica_db.sh; then
    printf 'test.sh: cannot start the primary and replica (reasons above)\n' >&2
    exit 1
fi
trap 'replica_db_stop; tls_db_stop; db_stop_if_private' EXIT

step "PgBouncer in transaction mode (scripts/pgbouncer.sh)"
# shellcheck source=scripts/pgbouncer.sh
if ! source scripts/pgbouncer.sh; then
    printf 'test.sh: could not start PgBouncer (reasons above)\n' >&2
    exit 1
fi
trap 'pgbouncer_stop_if_started; replica_db_stop; tls_db_stop; db_stop_if_private' EXIT

step "cargo fmt --all --check"
cargo fmt --all --check

step "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

# orm-core without its default tls-rustls feature: it still builds cleanly,
# and refuses a URL that asks for TLS (its unit tests say how).
step "orm-core without TLS (--no-default-features)"
cargo clippy -p orm-core --all-targets --no-default-features -- -D warnings
cargo test -p orm-core --lib --no-default-features

# Checks that every benchmark workload still runs, with tiny counts and in a
# debug build (times here mean nothing; docs/performance.md has the real ones).
step "bench smoke run"
cargo run -p bench -- --smoke

# The demo app against the RealWorld API's own suites (Hurl and Postman);
# installs hurl and newman when missing. It builds every test target, which
# the next step reuses.
step "RealWorld conformance suites (scripts/conformance.sh)"
CONFORMANCE_BUILD=tests bash scripts/conformance.sh

# The integration tests of sessions, flush batching, savepoints, version
# conflicts, relations, errors and cancellation again, through PgBouncer in
# transaction mode with the ORM's unnamed statement mode (TestDb::url says
# how); the few that test session-level state skip themselves, saying why.
# `--workspace` resolves features as the other steps do, so nothing is
# rebuilt.
step "integration tests through PgBouncer"
through_pgbouncer=(session_basics flush flush_failures savepoints returning row_switch review_findings
    relationships eager errors connection_safety streaming handles bulk bulk_update types)
ORM_TEST_VIA_PGBOUNCER=1 cargo test --workspace "${through_pgbouncer[@]/#/--test=}"

step "RealWorld conformance suites through PgBouncer"
CONFORMANCE_BUILD=tests CONFORMANCE_VIA_PGBOUNCER=1 bash scripts/conformance.sh

# Last, so that its summary ends the output.
step "cargo test --workspace"
cargo test --workspace
