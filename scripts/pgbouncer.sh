#!/usr/bin/env bash
# Starts PgBouncer in transaction mode in front of the database server that
# scripts/db.sh found, for the tests that prove the ORM works through a
# transaction pooler.
#
#   source scripts/pgbouncer.sh   (after scripts/db.sh) exports
#                                 ORM_PGBOUNCER_URL and defines
#                                 pgbouncer_stop_if_started; returns non-zero
#                                 if PgBouncer could not be started
#   bash scripts/pgbouncer.sh     prints the URL on stdout; PgBouncer keeps
#                                 running (stop it with `bash
#                                 scripts/pgbouncer.sh stop`)
#
# ORM_PGBOUNCER_URL is DATABASE_URL with its host and port replaced by
# PgBouncer's: `* = ...` in [databases] passes every database name through,
# so a database created on the server directly (each test's own) is reached
# through the pooler by the same name.
#
# The pooler is Debian's pgbouncer (1.18 on Debian 12, which does not track
# prepared statements), installed with apt-get when missing and we are root.
# Its config, log and pid file are under target/pgbouncer/. It listens on
# 127.0.0.1, on the first free port from ORM_PGBOUNCER_PORT (default 6433:
# the package's own service, where one runs, is on 6432), with
# pool_mode = transaction and auth_type = any: every client is logged in to
# the server as DATABASE_URL's user, without a password (as the test servers
# that scripts/db.sh finds or starts let it). PgBouncer refuses to run as
# root, so root runs it as the user db.sh runs a private cluster as.
#
# Like db.sh, sourcing does not change the caller's shell options, and every
# step checks its own result.

_PGB_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)/target/pgbouncer
_PGB_STARTED=0

_pgb_log() { printf 'pgbouncer.sh: %s\n' "$*" >&2; }

_pgb_install() {
    command -v pgbouncer >/dev/null 2>&1 && return 0
    apt_install pgbouncer
}

# Whether something accepts connections on 127.0.0.1:$1.
_pgb_port_taken() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Writes the config for port $2 into directory $1.
_pgb_write_config() {
    local dir=$1 port=$2 server_host=$3 server_port=$4 user=$5
    # The pool size per database is small, so that a handful of server
    # connections carry many more client sessions: the point of the tests.
    cat >"$dir/pgbouncer.ini" <<EOF
; Written by scripts/pgbouncer.sh for the test suite; rewritten at each start.
[databases]
* = host=$server_host port=$server_port user=$user

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $port
unix_socket_dir =
auth_type = any
pool_mode = transaction
default_pool_size = 4
max_client_conn = 500
logfile = $dir/pgbouncer.log
pidfile = $dir/pgbouncer.pid
EOF
}

# Replaces host and port in DATABASE_URL (URL or key=value form).
_pgb_url() {
    local port=$1 url=$DATABASE_URL
    case $url in
    postgres://* | postgresql://*)
        local scheme=${url%%://*} rest=${url#*://} userinfo= path=
        if [[ $rest == */* ]]; then
            path=/${rest#*/}
            rest=${rest%%/*}
        fi
        if [[ $rest == *@* ]]; then
            userinfo=${rest%@*}@
        fi
        printf '%s://%s127.0.0.1:%s%s\n' "$scheme" "$userinfo" "$port" "$path"
        ;;
    *)
        # In key=value form the last setting of a keyword wins.
        printf '%s host=127.0.0.1 port=%s\n' "$url" "$port"
        ;;
    esac
}

pgbouncer_setup() {
    local server user user_to_run out server_host server_port port tries=20 url
    _pgb_install || return 1
    # The address the server sees itself at answers for the server whatever
    # form DATABASE_URL takes; a Unix socket shows no address.
    if ! server=$(_db_query "$DATABASE_URL" \
        "SELECT coalesce(host(inet_server_addr()), '') || ' ' || coalesce(inet_server_port(), 0) || ' ' || current_user"); then
        _pgb_log "cannot ask the server where it listens: $server"
        return 1
    fi
    read -r server_host server_port user <<<"$server"
    if [[ -z $server_host || $server_port == 0 ]]; then
        _pgb_log "DATABASE_URL reaches the server over a Unix socket; PgBouncer needs its TCP address"
        return 1
    fi
    if _db_is_root; then
        user_to_run=$(_db_cluster_user) || return 1
    else
        user_to_run=$(id -un)
    fi
    if ! mkdir -p -- "$_PGB_DIR" || { _db_is_root && ! chown -- "$user_to_run" "$_PGB_DIR"; }; then
        _pgb_log "cannot prepare $_PGB_DIR for user $user_to_run"
        return 1
    fi
    # One left running by `bash scripts/pgbouncer.sh` or a killed test run.
    _pgb_stop
    port=${ORM_PGBOUNCER_PORT:-6433}
    while ((tries-- > 0)); do
        if _pgb_port_taken "$port"; then
            port=$((port + 1))
            continue
        fi
        _pgb_write_config "$_PGB_DIR" "$port" "$server_host" "$server_port" "$user" || return 1
        rm -f -- "$_PGB_DIR/pgbouncer.pid"
        if _db_as_logged "$user_to_run" "$_PGB_DIR/start.log" pgbouncer -d "$_PGB_DIR/pgbouncer.ini"; then
            _PGB_STARTED=1
            break
        fi
        # Another process may have taken the port since the check.
        _pgb_log "pgbouncer did not start on port $port; see $_PGB_DIR/start.log and pgbouncer.log"
        port=$((port + 1))
    done
    if [[ $_PGB_STARTED != 1 ]]; then
        _pgb_log "gave up starting pgbouncer"
        return 1
    fi
    url=$(_pgb_url "$port")
    # Listening may lag the daemon's fork a little.
    for tries in 1 2 3 4 5 6 7 8 9 10; do
        if out=$(_db_query "$url" 'select 1'); then
            ORM_PGBOUNCER_URL=$url
            export ORM_PGBOUNCER_URL
            _pgb_log "PgBouncer (transaction mode) at ORM_PGBOUNCER_URL=$(_db_redact "$url"), in front of $server_host:$server_port (log: $_PGB_DIR/pgbouncer.log)"
            return 0
        fi
        sleep 0.2
    done
    _pgb_log "pgbouncer started but does not answer at $(_db_redact "$url") ($out)"
    pgbouncer_stop_if_started
    return 1
}

# Stops the PgBouncer this shell started (by its pid file), printing
# nothing: test.sh calls it from its EXIT trap.
pgbouncer_stop_if_started() {
    [[ $_PGB_STARTED == 1 ]] || return 0
    _pgb_stop
    _PGB_STARTED=0
}

_pgb_stop() {
    local pid
    [[ -f $_PGB_DIR/pgbouncer.pid ]] || return 0
    pid=$(<"$_PGB_DIR/pgbouncer.pid")
    # SIGTERM: immediate shutdown, which is all a finished test run needs.
    [[ $pid =~ ^[0-9]+$ ]] && kill -TERM "$pid" 2>/dev/null
    rm -f -- "$_PGB_DIR/pgbouncer.pid"
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    set -euo pipefail
    # shellcheck source=scripts/db.sh
    source "$(dirname -- "${BASH_SOURCE[0]}")/db.sh"
    case ${1:-start} in
    start)
        pgbouncer_setup || exit 1
        printf '%s\n' "$ORM_PGBOUNCER_URL"
        ;;
    stop)
        _pgb_stop
        ;;
    *)
        printf 'usage: bash scripts/pgbouncer.sh [start|stop]\n' >&2
        exit 2
        ;;
    esac
else
    pgbouncer_setup
fi
