#!/usr/bin/env bash
# Load test of the demo app with wrk, on loopback only, for a bounded time:
# a read-and-write mix (demo-app/load/mix.lua) at 64 connections for
# LOAD_DURATION (default 10s) against a release build on a fresh database
# `demo_load_<pid>` (or LOAD_DB_NAME; the server may be shared: another
# checkout's run must not drop this one's database), dropped at the end. Then checks that the app's pool is back to all-idle, that no
# connection of the database is left in a transaction or running a
# statement (pg_stat_activity), and that the rows written match the writes
# answered 201. Prints requests/s, p50/p99 latency, and per request the
# statements and round trips the app's sessions sent (summed by the app,
# read from /health before and after the run), the app's CPU time (from
# /proc) and, when the database server runs on this machine, the server's
# (its postmaster and every process under it, from /proc: on a machine the
# app shares with its server, the whole budget of a request); exits
# non-zero if a check fails.
#
# With LOAD_APP_BIN set, runs that binary of the app instead of building
# one: to alternate two builds on a machine whose load varies, say.
#
# With LOAD_PERF=1, records the app's stacks during the run with perf
# (target/load/perf.data), for `perf report`; the sampling slows the app.
#
# With LOAD_CALLGRIND=1, runs the app under valgrind's callgrind, counts the
# instructions it executes while wrk runs, and reports them per request
# (target/load/callgrind.out.<pid>.1, for callgrind_annotate): a measure of
# the app's CPU that the machine's load does not move, to compare builds.
# The app runs about 50 times slower, so the requests per second and the
# latencies of such a run say nothing.
#
#   bash scripts/load.sh [plain|pgbouncer|replica]
#
#   plain      (the default) the app connects to the server scripts/db.sh
#              finds or starts
#   pgbouncer  the app connects through PgBouncer in transaction mode
#              (scripts/pgbouncer.sh, in front of that server), with
#              `statement_mode=unnamed`
#   replica    the app gets a private primary and its streaming replica
#              (scripts/replica_db.sh) and reads from the replica
#              (DATABASE_REPLICA_URLS); wrk sends no commit token, so every
#              GET goes to the replica
#
# Installs wrk and curl with apt-get when missing (as root), and what the
# setup needs as its script does. Every failure (a tool missing, the app not
# answering, seeding, wrk, a result wrk did not report, a check) prints its
# reason and exits non-zero.
set -euo pipefail

cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
SETUP=${1:-plain}
DURATION=${LOAD_DURATION:-10s}
CONNECTIONS=64
THREADS=2
USERS=8
# A database in use holds more than a page of articles: the run starts
# with 2,000, and it writes about 1,500 more in 10 s.
ARTICLES_PER_USER=250
DB_NAME=${LOAD_DB_NAME:-demo_load_$$}
LOAD_NAME=load.sh
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
WORK=$ROOT/target/load

# shellcheck source=scripts/demo_load.sh
source scripts/demo_load.sh

# Stops what this run started; each setup defines the functions it needs.
cleanup() {
    demo_app_stop >/dev/null 2>&1 || true
    app_db_drop "$DB_NAME" >/dev/null 2>&1 || true
    local stop
    for stop in pgbouncer_stop_if_started replica_db_stop db_stop_if_private; do
        if declare -F "$stop" >/dev/null; then "$stop"; fi
    done
}

# $1 with `?$2` or `&$2` appended.
with_parameter() {
    if [[ $1 == *\?* ]]; then
        printf '%s&%s\n' "$1" "$2"
    else
        printf '%s?%s\n' "$1" "$2"
    fi
}

case $SETUP in
plain | pgbouncer | replica) ;;
*)
    printf 'usage: bash scripts/load.sh [plain|pgbouncer|replica]\n' >&2
    exit 2
    ;;
esac

# Cost field $1 (requests, statements, roundTrips) of the app's /health:
# sums over the life of the process.
cost_field() {
    local health
    health=$(demo_app_get /health) || die "GET /health failed"
    json_number "$1" "$health" || die "GET /health has no cost field $1: $health"
}

# CPU time the app has used so far (user + system), in clock ticks, from
# /proc/PID/stat (fields 14 and 15, counted after the command name, which
# may hold spaces, in parentheses).
app_cpu_ticks() {
    local stat
    stat=$(cat "/proc/$DEMO_APP_PID/stat") || die "cannot read /proc/$DEMO_APP_PID/stat"
    stat=${stat##*) }
    awk '{ print $12 + $13 }' <<<"$stat"
}

# The postmaster of the app's database server when it runs on this machine
# (the parent of its checkpointer), or nothing for a server elsewhere.
server_postmaster_pid() {
    local checkpointer comm
    checkpointer=$(app_db_query "$DB_NAME" "SELECT pid FROM pg_stat_activity WHERE backend_type = 'checkpointer'") ||
        return 0
    [[ $checkpointer =~ ^[0-9]+$ ]] || return 0
    comm=$(cat "/proc/$checkpointer/comm" 2>/dev/null) || return 0
    [[ $comm == postgres ]] || return 0
    awk '$1 == "PPid:" { print $2 }' "/proc/$checkpointer/status" 2>/dev/null || true
}

# CPU time the server has used so far, in clock ticks: its postmaster's and
# each child's, user and system, with the children that ended (counted in
# the postmaster's cutime and cstime, fields 16 and 17). A backend that ends
# between two reads of this loop may be missed once.
server_cpu_ticks() {
    local file stat total=0
    local -a fields
    for file in /proc/[0-9]*/stat; do
        { stat=$(<"$file"); } 2>/dev/null || continue
        read -ra fields <<<"${stat##*) }"
        if [[ $file == "/proc/$server_pid/stat" || ${fields[1]} == "$server_pid" ]]; then
            total=$((total + fields[11] + fields[12] + fields[13] + fields[14]))
        fi
    done
    printf '%s\n' "$total"
}

step "tools"
ensure_tools || die "wrk and curl are needed (reasons above)"

step "database ($SETUP)"
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
app_env=()
if [[ $SETUP == replica ]]; then
    # shellcheck source=scripts/replica_db.sh
    source scripts/replica_db.sh || die "cannot start the primary and its replica (reasons above)"
    export DATABASE_URL=$ORM_PRIMARY_URL
else
    # shellcheck source=scripts/db.sh
    source scripts/db.sh || die "no PostgreSQL database (reasons above)"
fi
# shellcheck source=scripts/app_db.sh
source scripts/app_db.sh
# shellcheck source=scripts/demo_app.sh
source scripts/demo_app.sh
app_db_recreate "$DB_NAME" || die "cannot create the database $DB_NAME"
app_url=$(app_db_url "$DB_NAME")
case $SETUP in
pgbouncer)
    # shellcheck source=scripts/pgbouncer.sh
    source scripts/pgbouncer.sh || die "cannot start PgBouncer (reasons above)"
    app_url=$(with_parameter "$(DATABASE_URL=$ORM_PGBOUNCER_URL app_db_url "$DB_NAME")" statement_mode=unnamed)
    ;;
replica)
    app_env+=("DATABASE_REPLICA_URLS=$(DATABASE_URL=$ORM_REPLICA_URL app_db_url "$DB_NAME")")
    ;;
esac

app_bin=${LOAD_APP_BIN:-$TARGET_DIR/release/demo-app}
if [[ -z ${LOAD_APP_BIN:-} ]]; then
    step "cargo build --release -p demo-app"
    cargo build --release -p demo-app || die "the build failed"
fi

mkdir -p "$WORK"
if [[ -n ${LOAD_CALLGRIND:-} ]]; then
    command -v valgrind >/dev/null 2>&1 && command -v callgrind_control >/dev/null 2>&1 ||
        die "LOAD_CALLGRIND is set but valgrind (with callgrind_control) is not installed"
    # demo_app_start runs one program: this one execs the app under callgrind
    # in its own process, so the app's pid is callgrind's.
    printf '#!/bin/sh\nexec valgrind --tool=callgrind --callgrind-out-file=%q %q\n' \
        "$WORK/callgrind.out.%p" "$app_bin" >"$WORK/callgrind-app"
    chmod +x "$WORK/callgrind-app"
    app_bin=$WORK/callgrind-app
fi

step "start $app_bin"
demo_app_start "$app_bin" "$WORK/app.log" \
    DATABASE_URL="$app_url" "${app_env[@]}" JWT_SECRET=load RUST_LOG=warn,demo_app::server=info ||
    die "demo-app did not start (reasons above)"
pool_size=$(pool_field maxSize)
log "demo-app at $DEMO_APP_URL, pool of $pool_size connections"

step "seed: $USERS users, $((USERS * ARTICLES_PER_USER)) articles, follows"
seed "$WORK/data.txt"
# The statistics a database in use has (autovacuum's ANALYZE takes a
# minute or more to come to a new one): without them the server plans for
# tables of a few pages, and a plan it keeps (a prepared statement's
# generic plan) stays a sequential scan while the run grows the table.
out=$(app_db_query "$DB_NAME" "ANALYZE") || die "cannot analyze the seeded tables: $out"
articles_before=$(rows articles)
tags_before=$(rows article_tags)
comments_before=$(rows comments)

requests_before=$(cost_field requests)
statements_before=$(cost_field statements)
round_trips_before=$(cost_field roundTrips)
cpu_before=$(app_cpu_ticks)
server_pid=$(server_postmaster_pid)
server_cpu_before=
if [[ -n $server_pid ]]; then
    server_cpu_before=$(server_cpu_ticks)
fi

perf_pid=
if [[ -n ${LOAD_PERF:-} ]]; then
    command -v perf >/dev/null 2>&1 || die "LOAD_PERF is set but perf is not installed"
    step "perf record of the app during the run: $WORK/perf.data"
    perf record -F 499 --call-graph dwarf,32768 -o "$WORK/perf.data" -p "$DEMO_APP_PID" -- sleep "$DURATION" \
        >"$WORK/perf.log" 2>&1 &
    perf_pid=$!
fi

# valgrind names its control pipe after the HOST of the app's environment,
# which demo_app_start sets to the address the app binds: callgrind_control
# finds the pipe only with the same HOST.
callgrind_app() {
    HOST=127.0.0.1 callgrind_control "$1" "$DEMO_APP_PID" >/dev/null
}
if [[ -n ${LOAD_CALLGRIND:-} ]]; then
    rm -f "$WORK/callgrind.out.$DEMO_APP_PID".*
    callgrind_app -z || die "callgrind_control could not zero the app's counters"
fi
step "wrk: $CONNECTIONS connections, $THREADS threads, $DURATION"
LOAD_DATA=$WORK/data.txt wrk -t "$THREADS" -c "$CONNECTIONS" -d "$DURATION" --latency \
    -s demo-app/load/mix.lua "$DEMO_APP_URL" >"$WORK/wrk.txt" ||
    die "wrk failed (exit status $?): $(cat "$WORK/wrk.txt")"
instructions_run=
if [[ -n ${LOAD_CALLGRIND:-} ]]; then
    callgrind_app -d || die "callgrind_control could not dump the app's counters"
    instructions_run=$(awk '/^summary:/ { print $2; exit }' "$WORK/callgrind.out.$DEMO_APP_PID.1") ||
        die "no callgrind dump at $WORK/callgrind.out.$DEMO_APP_PID.1"
    [[ -n $instructions_run ]] || die "the callgrind dump has no summary line"
fi
cat "$WORK/wrk.txt"
if [[ -n $perf_pid ]]; then
    wait "$perf_pid" || die "perf record failed: $(cat "$WORK/perf.log")"
    log "perf: read with perf report -i $WORK/perf.data --no-children --sort dso,symbol"
fi
# Read before the checks' own requests.
cpu_run=$(($(app_cpu_ticks) - cpu_before))
server_cpu_run=
if [[ -n $server_pid ]]; then
    server_cpu_run=$(($(server_cpu_ticks) - server_cpu_before))
fi
requests_run=$(($(cost_field requests) - requests_before))
statements_run=$(($(cost_field statements) - statements_before))
round_trips_run=$(($(cost_field roundTrips) - round_trips_before))
((requests_run > 0)) || die "the app counted no requests during the run"

step "checks"
comments_ok=$(wrk_result comments_ok)
articles_ok=$(wrk_result articles_ok)
failed=$(wrk_result failed)
p50_us=$(wrk_result p50_us)
p99_us=$(wrk_result p99_us)
requests_per_s=$(wrk_requests_per_s)
socket_errors=$(grep -o 'Socket errors:.*' "$WORK/wrk.txt" || true)

((failed == 0)) || problems+=("$failed answers were not 2xx")
[[ -z $socket_errors ]] || problems+=("wrk reports $socket_errors")

check_pool_idle
check_no_busy_connections
if [[ $SETUP == replica ]]; then
    DATABASE_URL=$ORM_REPLICA_URL check_no_busy_connections
    # Where the reads went. Backends report their counts when they go idle,
    # at most once a second, so the last second may be missing.
    count_transactions="SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()"
    on_primary=$(app_db_query "$DB_NAME" "$count_transactions") || die "cannot read pg_stat_database: $on_primary"
    on_replica=$(DATABASE_URL=$ORM_REPLICA_URL app_db_query "$DB_NAME" "$count_transactions") ||
        die "cannot read the replica's pg_stat_database: $on_replica"
    log "transactions in $DB_NAME: $on_primary on the primary, $on_replica on the replica"
    ((on_replica > 0)) || problems+=("no transaction ran on the replica: reads did not go there")
fi

# wrk stops mid-flight: a write committed just before it hung up is in the
# table without a counted answer, so up to one per connection may exceed
# the count; fewer rows than 201s would mean a lost write.
check_rows() {
    local table=$1 before=$2 expected=$3 now
    now=$(rows "$table")
    log "$table: $before before, +$expected answered 201, $now now"
    if ((now < before + expected || now > before + expected + CONNECTIONS)); then
        problems+=("$table: $now rows, expected $((before + expected)) (+ at most $CONNECTIONS in flight)")
    fi
}
check_rows comments "$comments_before" "$comments_ok"
check_rows articles "$articles_before" "$articles_ok"
check_rows article_tags "$tags_before" "$((2 * articles_ok))"

step "result ($SETUP)"
awk -v rps="$requests_per_s" -v p50="$p50_us" -v p99="$p99_us" -v c="$comments_ok" -v a="$articles_ok" \
    -v n="$requests_run" -v st="$statements_run" -v rt="$round_trips_run" \
    -v cpu="$cpu_run" -v hz="$(getconf CLK_TCK)" 'BEGIN {
    printf "requests/s: %s\nlatency p50: %.2f ms, p99: %.2f ms\n", rps, p50 / 1000, p99 / 1000
    printf "per request: %.2f statements, %.2f round trips, %.3f ms of app CPU (%d requests counted by the app)\n",
        st / n, rt / n, cpu / hz * 1000 / n, n
    printf "writes answered 201: %d comments, %d articles\n", c, a
}'
if [[ -n $server_cpu_run ]]; then
    awk -v cpu="$server_cpu_run" -v n="$requests_run" -v hz="$(getconf CLK_TCK)" -v pid="$server_pid" 'BEGIN {
        printf "per request: %.3f ms of the database server'"'"'s CPU (postmaster %d and its processes, on this machine)\n",
            cpu / hz * 1000 / n, pid
    }'
fi
if [[ -n $instructions_run ]]; then
    awk -v ir="$instructions_run" -v n="$requests_run" -v file="$WORK/callgrind.out.$DEMO_APP_PID.1" 'BEGIN {
        printf "callgrind: %.0f instructions per request (%s over %d requests; %s)\n", ir / n, ir, n, file
    }'
fi
report_problems
