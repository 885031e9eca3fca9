#!/usr/bin/env bash
# A private PostgreSQL primary and a streaming replica of it, for
# tests/tests/replicas.rs and the demo app's replica tests.
#
#   source scripts/replica_db.sh   exports ORM_PRIMARY_URL, ORM_REPLICA_URL
#                                  and ORM_REPLICA_DATA and defines
#                                  replica_db_stop (the sourcing shell stops
#                                  both servers); returns non-zero if they
#                                  cannot be started
#   bash scripts/replica_db.sh     prints those variables as `export` lines,
#                                  for eval; the servers keep running
#   bash scripts/replica_db.sh stop  stops them
#
# Every start makes both clusters anew under target/pg-replica/ (or where
# scripts/db.sh would put a cluster target/pg cannot hold): a primary with
# wal_level = replica and a pg_hba.conf line for replication, on a free port
# of 127.0.0.1; then `pg_basebackup -R` copies it into a second data
# directory, which starts as a hot standby streaming from the primary, on
# another free port. The system's own PostgreSQL is left alone.
#
#   ORM_PRIMARY_URL   postgres://postgres@127.0.0.1:PORT/postgres
#   ORM_REPLICA_URL   postgres://postgres@127.0.0.1:PORT2/postgres
#   ORM_REPLICA_DATA  the replica's data directory, so that a test can stop
#                     and start it (`pg_ctl -D ... stop|start`, run as
#                     ORM_REPLICA_USER with ORM_REPLICA_PG_CTL)
#
# The server binaries, the clusters' user (not root) and their directory are
# found as scripts/db.sh finds them, with its functions. Messages go to
# stderr. Like scripts/db.sh, sourcing leaves the caller's shell options
# alone: every step checks its own result.

_REPLICA_ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
if ! declare -F _db_as >/dev/null; then
    # shellcheck source=scripts/db.sh
    source "$_REPLICA_ROOT/scripts/db.sh" --functions-only
fi
_REPLICA_STARTED=0
_REPLICA_USER=
_REPLICA_DIR=
_REPLICA_PG_CTL=

_replica_log() { printf 'replica_db.sh: %s\n' "$*" >&2; }

# Appends the settings both servers share to data directory $1's
# postgresql.conf, with port $2.
_replica_configure() {
    cat >>"$1/postgresql.conf" <<EOF
# Added by scripts/replica_db.sh for tests/tests/replicas.rs.
listen_addresses = '127.0.0.1'
port = $2
unix_socket_directories = ''
max_connections = 100
fsync = off
full_page_writes = off
wal_level = replica
max_wal_senders = 5
hot_standby = on
hot_standby_feedback = on
wal_receiver_status_interval = 1s
EOF
}

# Stops the server of data directory $1, if it runs.
_replica_stop_one() {
    [[ -f $1/postmaster.pid ]] || return 0
    _db_as_logged "$_REPLICA_USER" "$_REPLICA_DIR/ctl.log" "$_REPLICA_PG_CTL" -D "$1" -m fast -w stop \
        >/dev/null 2>&1 || true
}

_replica_stop_running() {
    _replica_stop_one "$_REPLICA_DIR/replica"
    _replica_stop_one "$_REPLICA_DIR/primary"
}

# Starts the server of data directory $1, logging to $2.
_replica_pg_start() {
    if ! _db_as_logged "$_REPLICA_USER" "$_REPLICA_DIR/ctl.log" "$_REPLICA_PG_CTL" -D "$1" -l "$2" -w -t 60 start; then
        _replica_log "pg_ctl start failed; last lines of $2:"
        tail -n 20 -- "$2" >&2
        return 1
    fi
}

_replica_start() {
    local bindir primary replica port replica_port url replica_url out
    if ! bindir=$(_db_server_bindir); then
        _db_install_server || return 1
        if ! bindir=$(_db_server_bindir); then
            _replica_log "found no initdb and pg_ctl (looked on PATH and in /usr/lib/postgresql/*/bin)"
            return 1
        fi
    fi
    _REPLICA_PG_CTL=$bindir/pg_ctl
    _REPLICA_USER=$(_db_cluster_user) || return 1
    _REPLICA_DIR=$(_db_cluster_dir "$_REPLICA_USER" pg-replica) || return 1
    primary=$_REPLICA_DIR/primary
    replica=$_REPLICA_DIR/replica

    # Servers left running by `bash scripts/replica_db.sh` or a killed run.
    _replica_stop_running
    if ! rm -rf -- "$primary" "$replica"; then
        _replica_log "cannot clear $_REPLICA_DIR"
        return 1
    fi
    if ! { port=$(_db_free_port 25640) && replica_port=$(_db_free_port 25641 "$port"); }; then
        _replica_log "no two free ports in 25640-25740 on 127.0.0.1"
        return 1
    fi

    if ! _db_as_logged "$_REPLICA_USER" "$_REPLICA_DIR/initdb.log" "$bindir/initdb" -D "$primary" -U postgres \
        --auth=trust --encoding=UTF8 --locale=C --no-sync; then
        _replica_log "initdb failed; see $_REPLICA_DIR/initdb.log:"
        tail -n 20 -- "$_REPLICA_DIR/initdb.log" >&2
        return 1
    fi
    if ! { _replica_configure "$primary" "$port" &&
        cat >"$primary/pg_hba.conf" <<'EOF'; }; then
# Written by scripts/replica_db.sh: the tests and the replica's WAL receiver.
host all         all 127.0.0.1/32 trust
host replication all 127.0.0.1/32 trust
EOF
        _replica_log "cannot configure the primary in $primary"
        return 1
    fi
    _replica_log "starting a primary on 127.0.0.1:$port (log: $_REPLICA_DIR/primary.log)"
    _replica_pg_start "$primary" "$_REPLICA_DIR/primary.log" || return 1
    _REPLICA_STARTED=1

    # -R writes primary_conninfo and standby.signal: the copy starts as a
    # standby streaming from the primary.
    if ! _db_as_logged "$_REPLICA_USER" "$_REPLICA_DIR/basebackup.log" "$bindir/pg_basebackup" \
        -d "host=127.0.0.1 port=$port user=postgres" -D "$replica" -R -X stream -c fast; then
        _replica_log "pg_basebackup failed; see $_REPLICA_DIR/basebackup.log:"
        tail -n 20 -- "$_REPLICA_DIR/basebackup.log" >&2
        replica_db_stop
        return 1
    fi
    # The copy has the primary's port; the last setting wins.
    if ! printf 'port = %s\n' "$replica_port" >>"$replica/postgresql.conf"; then
        _replica_log "cannot configure the replica in $replica"
        replica_db_stop
        return 1
    fi
    _replica_log "starting its replica on 127.0.0.1:$replica_port (log: $_REPLICA_DIR/replica.log)"
    if ! _replica_pg_start "$replica" "$_REPLICA_DIR/replica.log"; then
        replica_db_stop
        return 1
    fi

    url="postgres://postgres@127.0.0.1:$port/postgres"
    replica_url="postgres://postgres@127.0.0.1:$replica_port/postgres"
    if ! out=$(_db_query "$replica_url" 'select pg_is_in_recovery()') || [[ $out != t ]]; then
        _replica_log "the replica started but is not in recovery at $replica_url ($out)"
        replica_db_stop
        return 1
    fi
    if ! out=$(_db_query "$url" 'select count(*) from pg_stat_replication') || [[ $out != 1 ]]; then
        _replica_log "the primary at $url streams to $out replicas, not 1"
        replica_db_stop
        return 1
    fi
    export ORM_PRIMARY_URL=$url ORM_REPLICA_URL=$replica_url ORM_REPLICA_DATA=$replica \
        ORM_REPLICA_USER=$_REPLICA_USER ORM_REPLICA_PG_CTL=$_REPLICA_PG_CTL
    _replica_log "using ORM_PRIMARY_URL=$url ORM_REPLICA_URL=$replica_url"
}

# Stops both servers if this shell started them, printing nothing: test
# scripts call it from an EXIT trap after cargo's output must stay last.
replica_db_stop() {
    [[ $_REPLICA_STARTED == 1 ]] || return 0
    _replica_stop_running
    _REPLICA_STARTED=0
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    set -euo pipefail
    case ${1:-start} in
    start)
        _replica_start || exit 1
        _replica_log "the servers keep running; stop them with: bash scripts/replica_db.sh stop"
        printf 'export %s=%q\n' ORM_PRIMARY_URL "$ORM_PRIMARY_URL" ORM_REPLICA_URL "$ORM_REPLICA_URL" \
            ORM_REPLICA_DATA "$ORM_REPLICA_DATA" ORM_REPLICA_USER "$ORM_REPLICA_USER" \
            ORM_REPLICA_PG_CTL "$ORM_REPLICA_PG_CTL"
        ;;
    stop)
        _REPLICA_USER=$(_db_cluster_user) && _REPLICA_DIR=$(_db_cluster_dir "$_REPLICA_USER" pg-replica) &&
            _REPLICA_PG_CTL=$(_db_server_bindir)/pg_ctl || exit 1
        _replica_stop_running
        ;;
    *)
        printf 'usage: bash scripts/replica_db.sh [start|stop]\n' >&2
        exit 2
        ;;
    esac
else
    _replica_start
fi
