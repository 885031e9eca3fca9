#!/usr/bin/env bash
# A bounded chaos run of the demo app: the load mix of scripts/load.sh
# (demo-app/load/mix.lua, wrk, 64 connections) for CHAOS_SECONDS (default
# 60) while a second loop terminates a random backend of the app's database
# every CHAOS_TERMINATE_INTERVAL seconds (default 0.5, pg_terminate_backend)
# and, half-way, restarts the database server once (`pg_ctl restart -m
# immediate`: a crash and its recovery). Then checks, answer by answer
# (mix.lua records the status of every write it got an answer to):
#
#   - every comment and article answered 201 is in the database;
#   - none answered with an error (any status but 2xx) is, but for the
#     500 that says the outcome is unknown (the connection broke after
#     COMMIT was sent), which is counted, stored or not;
#   - every article the run created has both its tags (all or nothing);
#   - the app's pool is back to all-idle (GET /health) and serves requests;
#   - no connection is left in a transaction or running a statement
#     (pg_stat_activity);
#   - the app is still running.
#
# Writes whose answer wrk never read (in flight when it stopped) may be in
# the database or not; they are counted, not checked. Prints the requests,
# the answers by status, the faults and the rows checked; exits non-zero if
# a check fails.
#
#   bash scripts/chaos.sh
#
# The database server is a private cluster of its own (target/pg-chaos/,
# or where scripts/db.sh would put one, run as the user db.sh runs its
# cluster as, never root) on a free port from 25760, made anew at each run
# and stopped at the end: the system's PostgreSQL is never restarted. Its
# `synchronous_commit` stays on, so a commit the server acknowledged
# survives the crash (fsync is off: the machine itself does not crash).
# Installs wrk and curl with apt-get when missing (as root), and
# PostgreSQL as scripts/db.sh does. Not part of scripts/test.sh (too long).
set -euo pipefail

cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
SECONDS_TO_RUN=${CHAOS_SECONDS:-60}
TERMINATE_INTERVAL=${CHAOS_TERMINATE_INTERVAL:-0.5}
CONNECTIONS=64
THREADS=2
USERS=8
ARTICLES_PER_USER=5
DB_NAME=demo_chaos
LOAD_NAME=chaos.sh
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
WORK=$ROOT/target/chaos

# shellcheck source=scripts/db.sh
source scripts/db.sh --functions-only
# shellcheck source=scripts/app_db.sh
source scripts/app_db.sh
# shellcheck source=scripts/demo_app.sh
source scripts/demo_app.sh
# shellcheck source=scripts/demo_load.sh
source scripts/demo_load.sh

CLUSTER_USER=
CLUSTER_DIR=
PG_CTL=
CHAOS_PID=

# Runs pg_ctl on the private cluster as its user, logging to ctl.log.
cluster_ctl() {
    _db_as_logged "$CLUSTER_USER" "$CLUSTER_DIR/ctl.log" "$PG_CTL" -D "$CLUSTER_DIR/data" "$@"
}

# Makes and starts the private cluster anew and exports DATABASE_URL.
cluster_start() {
    local bindir port
    if ! bindir=$(_db_server_bindir); then
        _db_install_server || return 1
        bindir=$(_db_server_bindir) || return 1
    fi
    PG_CTL=$bindir/pg_ctl
    CLUSTER_USER=$(_db_cluster_user) || return 1
    CLUSTER_DIR=$(_db_cluster_dir "$CLUSTER_USER" pg-chaos) || return 1
    # One left running by a killed run.
    if [[ -f $CLUSTER_DIR/data/postmaster.pid ]]; then
        cluster_ctl -m immediate -w stop || true
    fi
    rm -rf -- "$CLUSTER_DIR/data" || return 1
    port=$(_db_free_port 25760) || {
        log "no free port in 25760-25860 on 127.0.0.1"
        return 1
    }
    if ! _db_as_logged "$CLUSTER_USER" "$CLUSTER_DIR/initdb.log" "$bindir/initdb" -D "$CLUSTER_DIR/data" \
        -U postgres --auth=trust --encoding=UTF8 --locale=C --no-sync; then
        log "initdb failed; see $CLUSTER_DIR/initdb.log"
        return 1
    fi
    cat >>"$CLUSTER_DIR/data/postgresql.conf" <<EOF || return 1

# Added by scripts/chaos.sh: loopback only, in the config so that the
# restart keeps the port; synchronous_commit stays on (see the script).
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = ''
max_connections = 100
fsync = off
full_page_writes = off
EOF
    log "starting a private cluster on 127.0.0.1:$port (log: $CLUSTER_DIR/server.log)"
    cluster_ctl -l "$CLUSTER_DIR/server.log" -w -t 60 start || {
        log "pg_ctl start failed; see $CLUSTER_DIR/server.log"
        return 1
    }
    export DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres"
}

cleanup() {
    if [[ -n $CHAOS_PID ]]; then
        kill "$CHAOS_PID" 2>/dev/null || true
        wait "$CHAOS_PID" 2>/dev/null || true
    fi
    demo_app_stop >/dev/null 2>&1 || true
    if [[ -n $PG_CTL && -f $CLUSTER_DIR/data/postmaster.pid ]]; then
        cluster_ctl -m fast -w stop >/dev/null 2>&1 || true
    fi
}

# The faults, for SECONDS_TO_RUN seconds: a random client backend of the
# app's database terminated every TERMINATE_INTERVAL seconds, and the server
# restarted once half-way. Writes "terminated=N restarts=N" to $1.
faults() {
    local out=$1 end=$((SECONDS + SECONDS_TO_RUN)) restart_at=$((SECONDS + SECONDS_TO_RUN / 2))
    local terminated=0 restarts=0 hit
    while ((SECONDS < end)); do
        if ((restarts == 0 && SECONDS >= restart_at)); then
            log "restarting the server (immediate shutdown: a crash, then recovery)"
            if cluster_ctl -l "$CLUSTER_DIR/server.log" -m immediate -w -t 60 restart >/dev/null; then
                restarts=1
            else
                log "the restart failed; see $CLUSTER_DIR/ctl.log"
                restarts=-1
            fi
        fi
        # Fails while the server restarts; the next round tries again.
        if hit=$(app_db_query "$DB_NAME" "SELECT count(*) FROM (SELECT pid FROM pg_stat_activity
            WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'
            ORDER BY random() LIMIT 1) AS victim WHERE pg_terminate_backend(pid)"); then
            terminated=$((terminated + hit))
        fi
        sleep "$TERMINATE_INTERVAL"
    done
    printf 'terminated=%s restarts=%s\n' "$terminated" "$restarts" >"$out"
}

# Loads the recorded answers into a temporary table and prints, as
# KIND_WHAT=N lines, what the database holds for them (see the result step
# for what each figure means).
check_answers() {
    local psql
    psql=$(_db_psql) || die "psql is not installed"
    cat "$WORK"/answers.* >"$WORK/answers.txt"
    PGCONNECT_TIMEOUT=5 "$psql" -X -q -At -v ON_ERROR_STOP=1 -d "$(app_db_url "$DB_NAME")" \
        -c 'CREATE TEMPORARY TABLE answer (status int, kind text, thread int, number int, unknown boolean)' \
        -c "\\copy answer (status, kind, thread, number, unknown) FROM '$WORK/answers.txt' WITH (DELIMITER ' ')" \
        -f - <<'SQL'
-- The comment body or article title that mix.lua sent for each write.
ALTER TABLE answer ADD COLUMN key text;
UPDATE answer SET key = CASE kind
    WHEN 'comment' THEN format('load %s-%s', thread, number)
    ELSE format('Load %s %s', thread, number) END;
CREATE INDEX ON answer (kind, key);
ANALYZE answer;
WITH stored AS (
    SELECT a.status, a.kind, a.unknown, coalesce(c.id, r.id) IS NOT NULL AS stored
    FROM answer a
    LEFT JOIN comments c ON a.kind = 'comment' AND c.body = a.key
    LEFT JOIN articles r ON a.kind = 'article' AND r.title = a.key
), unanswered AS (
    SELECT 'comment' AS kind FROM comments c
    WHERE c.body LIKE 'load %'
      AND NOT EXISTS (SELECT 1 FROM answer a WHERE a.kind = 'comment' AND a.key = c.body)
    UNION ALL
    SELECT 'article' FROM articles r
    WHERE r.title LIKE 'Load %'
      AND NOT EXISTS (SELECT 1 FROM answer a WHERE a.kind = 'article' AND a.key = r.title)
), figures AS (
    SELECT kind, 'created' AS what, count(*) FILTER (WHERE status = 201) AS n FROM stored GROUP BY kind
    UNION ALL
    SELECT kind, 'failed', count(*) FILTER (WHERE status NOT BETWEEN 200 AND 299 AND NOT unknown)
    FROM stored GROUP BY kind
    UNION ALL
    SELECT kind, 'unknown', count(*) FILTER (WHERE unknown) FROM stored GROUP BY kind
    UNION ALL
    SELECT kind, 'unknownstored', count(*) FILTER (WHERE unknown AND stored) FROM stored GROUP BY kind
    UNION ALL
    SELECT kind, 'lost', count(*) FILTER (WHERE status = 201 AND NOT stored) FROM stored GROUP BY kind
    UNION ALL
    SELECT kind, 'ghosts', count(*) FILTER (WHERE status NOT BETWEEN 200 AND 299 AND NOT unknown AND stored)
    FROM stored GROUP BY kind
    UNION ALL
    SELECT 'article', 'torn', count(*) FROM articles r
    WHERE r.title LIKE 'Load %' AND (SELECT count(*) FROM article_tags t WHERE t.article_id = r.id) <> 2
    UNION ALL
    SELECT kind, 'unanswered', count(*) FROM unanswered GROUP BY kind
)
SELECT format('%s_%s=%s', kind, what, n) FROM figures ORDER BY 1;
SQL
}

# The value of name $1 in check_answers' output $2 (0 if absent).
figure() {
    local value
    value=$(sed -n "s/^$1=//p" <<<"$2")
    printf '%s\n' "${value:-0}"
}

trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

step "tools"
ensure_tools || die "wrk and curl are needed (reasons above)"

step "private cluster"
cluster_start || die "cannot start the private cluster (reasons above)"
app_db_recreate "$DB_NAME" || die "cannot create the database $DB_NAME"

step "cargo build --release -p demo-app"
cargo build --release -p demo-app || die "the build failed"

step "start demo-app (release)"
mkdir -p "$WORK"
rm -f -- "$WORK"/answers.*
# The handler timeout stays above the server's restart, so requests waiting
# for a connection then are answered by the pool, not cut off.
demo_app_start "$TARGET_DIR/release/demo-app" "$WORK/app.log" \
    DATABASE_URL="$(app_db_url "$DB_NAME")" JWT_SECRET=chaos REQUEST_TIMEOUT_SECS=10 \
    RUST_LOG=warn,demo_app::server=info ||
    die "demo-app did not start (reasons above)"
log "demo-app at $DEMO_APP_URL, pool of $(pool_field maxSize) connections"

step "seed: $USERS users, $((USERS * ARTICLES_PER_USER)) articles, follows"
seed "$WORK/data.txt"

step "wrk: $CONNECTIONS connections, $THREADS threads, ${SECONDS_TO_RUN}s; a backend terminated every ${TERMINATE_INTERVAL}s, one restart"
faults "$WORK/faults.txt" &
CHAOS_PID=$!
LOAD_DATA=$WORK/data.txt LOAD_RECORD=$WORK/answers wrk -t "$THREADS" -c "$CONNECTIONS" -d "${SECONDS_TO_RUN}s" \
    --timeout 15s --latency -s demo-app/load/mix.lua "$DEMO_APP_URL" >"$WORK/wrk.txt" ||
    die "wrk failed (exit status $?): $(cat "$WORK/wrk.txt")"
wait "$CHAOS_PID" || die "the fault loop failed"
CHAOS_PID=
cat "$WORK/wrk.txt"
faults_done=$(<"$WORK/faults.txt")
log "faults: $faults_done"
[[ $faults_done == *restarts=1 ]] || problems+=("the server was not restarted: $faults_done")

step "checks"
kill -0 "$DEMO_APP_PID" 2>/dev/null || die "the app is no longer running; see $WORK/app.log"
# Once the server is back, the first request on each connection the crash
# broke may still fail; the pool check below runs the requests that clear
# them and must then see every connection back.
check_pool_idle
check_no_busy_connections
answers=$(check_answers) || die "cannot check the answers against the database: $answers"
for kind in comment article; do
    n=$(figure "${kind}_lost" "$answers")
    ((n == 0)) || problems+=("$n ${kind}s answered 201 are not in the database")
    n=$(figure "${kind}_ghosts" "$answers")
    ((n == 0)) || problems+=("$n ${kind}s answered with an error are in the database")
done
n=$(figure article_torn "$answers")
((n == 0)) || problems+=("$n articles in the database lack one of their two tags")

step "result"
statuses=$(sed -n 's/.*load-result: statuses //p' "$WORK/wrk.txt")
requests=$(sed -n 's/^ *\([0-9][0-9]*\) requests in .*/\1/p' "$WORK/wrk.txt")
printf 'requests: %s (%s/s), answers by status: %s\n' "$requests" "$(wrk_requests_per_s)" "$statuses"
printf 'faults: %s\n' "$faults_done"
printf 'socket errors: %s\n' "$(grep -o 'Socket errors:.*' "$WORK/wrk.txt" || printf none)"
for kind in comment article; do
    printf '%ss: %s answered 201, %s answered with an error, %s answered "outcome unknown" (%s of them stored), %s unanswered (not checked); lost %s, ghosts %s, torn %s\n' \
        "$kind" "$(figure "${kind}_created" "$answers")" "$(figure "${kind}_failed" "$answers")" \
        "$(figure "${kind}_unknown" "$answers")" "$(figure "${kind}_unknownstored" "$answers")" \
        "$(figure "${kind}_unanswered" "$answers")" "$(figure "${kind}_lost" "$answers")" \
        "$(figure "${kind}_ghosts" "$answers")" "$(figure "${kind}_torn" "$answers")"
done
printf '(lost: answered 201, not in the database; ghosts: answered with an error, in the database; torn: an article without both tags)\n'
report_problems
