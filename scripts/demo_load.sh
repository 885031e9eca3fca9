#!/usr/bin/env bash
# The steps that scripts/load.sh and scripts/chaos.sh share: the tools,
# seeding the demo app, reading wrk's results and the app's pool, and the
# checks that every connection came back. Source it after scripts/db.sh,
# app_db.sh and demo_app.sh, with these set:
#
#   LOAD_NAME     the script's name, for its messages
#   DB_NAME       the app's database (app_db.sh's NAME)
#   WORK          the directory of wrk's output (wrk.txt)
#   CONNECTIONS   wrk's connections
#   USERS, ARTICLES_PER_USER   what seed creates
#
# Failed checks are collected in the array `problems`; step, log and die
# print the script's messages (die exits non-zero).

# shellcheck source=scripts/apt.sh
source scripts/apt.sh

problems=()

step() { printf '\n==> %s\n' "$*" >&2; }
log() { printf '%s: %s\n' "$LOAD_NAME" "$*" >&2; }
die() {
    log "FAILED: $*"
    exit 1
}

# Installs wrk and curl with apt-get when missing (as root).
ensure_tools() {
    local missing=()
    command -v wrk >/dev/null 2>&1 || missing+=(wrk)
    command -v curl >/dev/null 2>&1 || missing+=(curl)
    ((${#missing[@]} == 0)) && return 0
    apt_install "${missing[@]}"
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

# The rows of a table in the app's database.
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

# Number $1 of wrk's load-result lines (written by mix.lua's done()).
wrk_result() {
    local value
    value=$(sed -n "s/.*load-result:.* $1=\([0-9][0-9]*\).*/\1/p" "$WORK/wrk.txt")
    [[ -n $value ]] || die "wrk reported no $1 (no load-result line from mix.lua?): see $WORK/wrk.txt"
    printf '%s\n' "$value"
}

# wrk's requests per second.
wrk_requests_per_s() {
    local value
    value=$(sed -n 's/^Requests\/sec: *\([0-9.]*\)$/\1/p' "$WORK/wrk.txt")
    [[ -n $value ]] || die "wrk reported no Requests/sec: see $WORK/wrk.txt"
    printf '%s\n' "$value"
}

# Checks that the pool serves new requests and then returns to all-idle.
# Requests cancelled when wrk hung up closed their connections (a
# statement may have been running); the pool must serve new requests, and
# afterwards every connection must be back in it, none waited for.
check_pool_idle() {
    local after_failures=0 settled= size available waiting
    for _ in $(seq 20); do
        curl -sS --fail -o /dev/null "$DEMO_APP_URL/api/articles?limit=20" || after_failures=$((after_failures + 1))
    done
    ((after_failures == 0)) || problems+=("$after_failures of 20 requests after the load failed")
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
    [[ -n $settled ]] ||
        problems+=("the pool did not return to all-idle within 5 s: size $size, available $available, waiting $waiting")
}

# Checks that no connection of the app's database is left in a transaction
# or running a statement (pg_stat_activity).
check_no_busy_connections() {
    local busy
    busy=$(app_db_query "$DB_NAME" "SELECT count(*) FILTER (WHERE state LIKE 'idle in transaction%'),
        count(*) FILTER (WHERE state = 'active') FROM pg_stat_activity
        WHERE datname = current_database() AND pid <> pg_backend_pid()") ||
        die "cannot read pg_stat_activity: $busy"
    log "pg_stat_activity: idle in transaction|active = $busy"
    [[ $busy == "0|0" ]] || problems+=("connections left busy (idle in transaction|active): $busy")
}

# Prints the problems found and returns non-zero if there are any.
report_problems() {
    if ((${#problems[@]} > 0)); then
        printf '%s: FAILED: %s\n' "$LOAD_NAME" "${problems[@]}" >&2
        return 1
    fi
    printf '%s: all checks passed\n' "$LOAD_NAME"
}
