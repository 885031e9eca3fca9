#!/usr/bin/env bash
# Load test of the demo app with wrk, on loopback only, for a bounded time:
# a read-and-write mix (demo-app/load/mix.lua) at 64 connections for
# LOAD_DURATION (default 10s) against a release build on a fresh database
# `demo_load` (or LOAD_DB_NAME, for a run beside another on the same
# server). Then checks that the app's pool is back to all-idle, that no
# connection of the database is left in a transaction or running a
# statement (pg_stat_activity), and that the rows written match the writes
# answered 201. Prints requests/s, p50/p99 latency, and per request the
# statements and round trips the app's sessions sent (summed by the app,
# read from /health before and after the run) and the app's CPU time (from
# /proc); exits non-zero if a check fails.
#
# With LOAD_PERF=1, records the app's stacks during the run with perf
# (target/load/perf.data), for `perf report`; the sampling slows the app.
#
# Installs wrk and curl with apt-get when missing (as root). Every failure
# (a tool missing, the app not answering, seeding, wrk, a result wrk did not
# report, a check) prints its reason and exits non-zero.
set -euo pipefail

cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
DURATION=${LOAD_DURATION:-10s}
CONNECTIONS=64
THREADS=2
USERS=8
ARTICLES_PER_USER=5
DB_NAME=${LOAD_DB_NAME:-demo_load}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
WORK=$ROOT/target/load

step() { printf '\n==> %s\n' "$*" >&2; }
log() { printf 'load.sh: %s\n' "$*" >&2; }
die() {
    log "FAILED: $*"
    exit 1
}

ensure_tools() {
    local missing=()
    command -v wrk >/dev/null 2>&1 || missing+=(wrk)
    command -v curl >/dev/null 2>&1 || missing+=(curl)
    ((${#missing[@]} == 0)) && return 0
    if [[ $(id -u) != 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
        log "missing ${missing[*]}: install them (Debian: apt-get install ${missing[*]})"
        return 1
    fi
    log "installing ${missing[*]} with apt-get"
    if ! DEBIAN_FRONTEND=noninteractive apt-get update -q >&2 ||
        ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >&2; then
        log "apt-get could not install ${missing[*]}"
        return 1
    fi
}

cleanup() {
    demo_app_stop >/dev/null 2>&1 || true
    app_db_drop "$DB_NAME" >/dev/null 2>&1 || true
    db_stop_if_private
}

# POSTs JSON to the app and prints the response body; fails on a non-2xx.
api_post() {
    local path=$1 body=$2 token=${3:-}
    local -a auth=()
    [[ -n $token ]] && auth=(-H "Authorization: Token $token")
    curl -sS --fail-with-body -X POST "${auth[@]}" -H 'Content-Type: application/json' \
        --data "$body" "$DEMO_APP_URL$path"
}

# The value of string field $1 in JSON body $2; fails if there is none or
# it is empty (no jq needed for our shapes).
json_string() {
    [[ $2 =~ \"$1\":\"([^\"]+)\" ]] || return 1
    printf '%s\n' "${BASH_REMATCH[1]}"
}

# The value of number field $1 in JSON body $2; fails if there is none.
json_number() {
    [[ $2 =~ \"$1\":([0-9]+) ]] || return 1
    printf '%s\n' "${BASH_REMATCH[1]}"
}

# Creates the users, articles and follows the mix reads, and writes the
# tokens and slugs to the file named $1 for mix.lua.
seed() {
    local data=$1 i j answer token slug
    : >"$data"
    local -a names=() tokens=()
    for ((i = 1; i <= USERS; i++)); do
        names+=("loader$i")
        answer=$(api_post /api/users \
            "{\"user\":{\"username\":\"loader$i\",\"email\":\"loader$i@example.com\",\"password\":\"password123\"}}") ||
            die "seeding: registering loader$i failed: $answer"
        token=$(json_string token "$answer") || die "seeding: no token for loader$i in: $answer"
        tokens+=("$token")
        printf 'token %s\n' "$token" >>"$data"
        for ((j = 1; j <= ARTICLES_PER_USER; j++)); do
            answer=$(api_post /api/articles \
                "{\"article\":{\"title\":\"Seed $i $j\",\"description\":\"d\",\"body\":\"b\",\"tagList\":[\"seed\",\"s$j\"]}}" \
                "$token") || die "seeding: creating an article failed: $answer"
            slug=$(json_string slug "$answer") || die "seeding: no slug in: $answer"
            printf 'slug %s\n' "$slug" >>"$data"
        done
    done
    # Everyone follows the next three users, so feeds have articles.
    for ((i = 0; i < USERS; i++)); do
        for ((j = 1; j <= 3; j++)); do
            answer=$(api_post "/api/profiles/${names[(i + j) % USERS]}/follow" '{}' "${tokens[i]}") ||
                die "seeding: a follow failed: $answer"
        done
    done
}

# The rows of a table in the load database.
rows() {
    local out
    out=$(app_db_query "$DB_NAME" "SELECT count(*) FROM $1") || die "cannot count the rows of $1: $out"
    printf '%s\n' "$out"
}

# Pool field $1 (size, available, waiting, maxSize) of the app's /health.
pool_field() {
    local health
    health=$(demo_app_get /health) || die "GET /health failed"
    json_number "$1" "$health" || die "GET /health has no pool field $1: $health"
}

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

# Number $1 of wrk's load-result lines (written by mix.lua's done()).
wrk_result() {
    local value
    value=$(sed -n "s/.*load-result:.* $1=\([0-9][0-9]*\).*/\1/p" "$WORK/wrk.txt")
    [[ -n $value ]] || die "wrk reported no $1 (no load-result line from mix.lua?): see $WORK/wrk.txt"
    printf '%s\n' "$value"
}

step "tools"
ensure_tools || die "wrk and curl are needed (reasons above)"

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
app_db_recreate "$DB_NAME" || die "cannot create the database $DB_NAME"

step "cargo build --release -p demo-app"
cargo build --release -p demo-app || die "the build failed"

step "start demo-app (release)"
mkdir -p "$WORK"
demo_app_start "$TARGET_DIR/release/demo-app" "$WORK/app.log" \
    DATABASE_URL="$(app_db_url "$DB_NAME")" JWT_SECRET=load RUST_LOG=warn,demo_app::server=info ||
    die "demo-app did not start (reasons above)"
pool_size=$(pool_field maxSize)
log "demo-app at $DEMO_APP_URL, pool of $pool_size connections"

step "seed: $USERS users, $((USERS * ARTICLES_PER_USER)) articles, follows"
seed "$WORK/data.txt"
articles_before=$(rows articles)
tags_before=$(rows article_tags)
comments_before=$(rows comments)

requests_before=$(cost_field requests)
statements_before=$(cost_field statements)
round_trips_before=$(cost_field roundTrips)
cpu_before=$(app_cpu_ticks)

perf_pid=
if [[ -n ${LOAD_PERF:-} ]]; then
    command -v perf >/dev/null 2>&1 || die "LOAD_PERF is set but perf is not installed"
    step "perf record of the app during the run: $WORK/perf.data"
    perf record -F 499 --call-graph dwarf,32768 -o "$WORK/perf.data" -p "$DEMO_APP_PID" -- sleep "$DURATION" \
        >"$WORK/perf.log" 2>&1 &
    perf_pid=$!
fi

step "wrk: $CONNECTIONS connections, $THREADS threads, $DURATION"
LOAD_DATA=$WORK/data.txt wrk -t "$THREADS" -c "$CONNECTIONS" -d "$DURATION" --latency \
    -s demo-app/load/mix.lua "$DEMO_APP_URL" >"$WORK/wrk.txt" ||
    die "wrk failed (exit status $?): $(cat "$WORK/wrk.txt")"
cat "$WORK/wrk.txt"
if [[ -n $perf_pid ]]; then
    wait "$perf_pid" || die "perf record failed: $(cat "$WORK/perf.log")"
    log "perf: read with perf report -i $WORK/perf.data --no-children --sort dso,symbol"
fi
# Read before the checks' own requests.
cpu_run=$(($(app_cpu_ticks) - cpu_before))
requests_run=$(($(cost_field requests) - requests_before))
statements_run=$(($(cost_field statements) - statements_before))
round_trips_run=$(($(cost_field roundTrips) - round_trips_before))
((requests_run > 0)) || die "the app counted no requests during the run"

step "checks"
problems=()
comments_ok=$(wrk_result comments_ok)
articles_ok=$(wrk_result articles_ok)
failed=$(wrk_result failed)
p50_us=$(wrk_result p50_us)
p99_us=$(wrk_result p99_us)
requests_per_s=$(sed -n 's/^Requests\/sec: *\([0-9.]*\)$/\1/p' "$WORK/wrk.txt")
[[ -n $requests_per_s ]] || die "wrk reported no Requests/sec: see $WORK/wrk.txt"
socket_errors=$(grep -o 'Socket errors:.*' "$WORK/wrk.txt" || true)

((failed == 0)) || problems+=("$failed answers were not 2xx")
[[ -z $socket_errors ]] || problems+=("wrk reports $socket_errors")

# Requests cancelled when wrk hung up closed their connections (a statement
# may have been running); the pool must serve new requests, and afterwards
# every connection must be back in it, none waited for.
after_failures=0
for _ in $(seq 20); do
    curl -sS --fail -o /dev/null "$DEMO_APP_URL/api/articles?limit=20" || after_failures=$((after_failures + 1))
done
((after_failures == 0)) || problems+=("$after_failures of 20 requests after the load failed")
settled=
for _ in $(seq 50); do
    size=$(pool_field size)
    available=$(pool_field available)
    waiting=$(pool_field waiting)
    if ((size > 0 && size == available && waiting == 0)); then
        settled=yes
        break
    fi
    sleep 0.1
done
log "pool: size $size, available $available, waiting $waiting"
[[ -n $settled ]] || problems+=("the pool did not return to all-idle within 5 s: size $size, available $available, waiting $waiting")

busy=$(app_db_query "$DB_NAME" "SELECT count(*) FILTER (WHERE state LIKE 'idle in transaction%'),
    count(*) FILTER (WHERE state = 'active') FROM pg_stat_activity
    WHERE datname = current_database() AND pid <> pg_backend_pid()") ||
    die "cannot read pg_stat_activity: $busy"
log "pg_stat_activity: idle in transaction|active = $busy"
[[ $busy == "0|0" ]] || problems+=("connections left busy (idle in transaction|active): $busy")

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

step "result"
awk -v rps="$requests_per_s" -v p50="$p50_us" -v p99="$p99_us" -v c="$comments_ok" -v a="$articles_ok" \
    -v n="$requests_run" -v st="$statements_run" -v rt="$round_trips_run" \
    -v cpu="$cpu_run" -v hz="$(getconf CLK_TCK)" 'BEGIN {
    printf "requests/s: %s\nlatency p50: %.2f ms, p99: %.2f ms\n", rps, p50 / 1000, p99 / 1000
    printf "per request: %.2f statements, %.2f round trips, %.3f ms of app CPU (%d requests counted by the app)\n",
        st / n, rt / n, cpu / hz * 1000 / n, n
    printf "writes answered 201: %d comments, %d articles\n", c, a
}'
if ((${#problems[@]} > 0)); then
    printf 'load.sh: FAILED: %s\n' "${problems[@]}" >&2
    exit 1
fi
printf 'load.sh: all checks passed\n'
