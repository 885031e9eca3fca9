#!/usr/bin/env bash
# Makes a PostgreSQL database available for the test suite.
#
#   source scripts/db.sh     exports DATABASE_URL and defines db_stop_if_private
#                            (the sourcing shell stops the cluster it started);
#                            returns non-zero if no database could be found
#   bash scripts/db.sh       prints the URL on stdout; a private cluster it
#                            starts keeps running
#   bash scripts/db.sh stop  stops the project's private cluster
#   source scripts/db.sh --functions-only
#                            only defines the functions, for scripts that
#                            start clusters of their own (scripts/tls_db.sh)
#
# Where the database comes from, first that works:
#   1. DATABASE_URL, if it is set and answers `select 1`;
#   2. a server at ORM_PG_PROBE_HOST:ORM_PG_PROBE_PORT (default 127.0.0.1:5432)
#      that lets user postgres in without a password: database `test` if it
#      exists, else `postgres`;
#   3. a private cluster under target/pg/, listening on 127.0.0.1 port
#      ORM_PG_PRIVATE_PORT (default 25432) with trust auth. If the server
#      binaries are missing and we are root, Debian's postgresql package is
#      installed. PostgreSQL refuses to run as root, so root runs the cluster as
#      ORM_PG_USER (default: postgres if that user exists, else a new system
#      user orm-pg).
#
# Messages go to stderr; stdout carries only the URL, and only when run
# standalone. Sourcing must not change the caller's shell options, so
# `set -euo pipefail` is only set when run standalone and every step checks
# its own result instead of relying on errexit.

_DB_ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
_DB_PRIVATE_STARTED=0
_DB_PRIVATE_USER=
_DB_PRIVATE_DIR=
_DB_PG_CTL=

_db_log() { printf 'db.sh: %s\n' "$*" >&2; }

# shellcheck source=scripts/apt.sh
source "$_DB_ROOT/scripts/apt.sh"

# Keeps passwords out of logs.
_db_redact() {
    sed -E 's#^([a-z]+://[^:/@]*):[^@/]*@#\1:***@#; s#(password=)[^ ]*#\1***#' <<<"$1"
}

_db_is_root() { [[ $(id -u) == 0 ]]; }

# Prints a directory holding initdb, pg_ctl and postgres: initdb's on PATH
# (resolved, since /usr/local/bin/initdb may be a symlink and pg_ctl looks
# for postgres next to its real self), else the newest Debian one.
_db_server_bindir() {
    local found dir
    local -a candidates=()
    if found=$(command -v initdb 2>/dev/null) && found=$(readlink -f -- "$found"); then
        candidates+=("$(dirname -- "$found")")
    fi
    while IFS= read -r dir; do
        candidates+=("$dir")
    done < <(printf '%s\n' /usr/lib/postgresql/*/bin | sort -rV)
    for dir in "${candidates[@]}"; do
        if [[ -x $dir/initdb && -x $dir/pg_ctl && -x $dir/postgres ]]; then
            printf '%s\n' "$dir"
            return 0
        fi
    done
    return 1
}

# Not resolved like the server binaries: Debian's /usr/bin/psql is a wrapper
# that only works under its own name.
_db_psql() {
    local dir
    if command -v psql 2>/dev/null; then
        return 0
    fi
    while IFS= read -r dir; do
        if [[ -x $dir/psql ]]; then
            printf '%s/psql\n' "$dir"
            return 0
        fi
    done < <(printf '%s\n' /usr/lib/postgresql/*/bin | sort -rV)
    return 1
}

# Runs a query against a URL, printing the unaligned result, or the error on
# failure.
_db_query() {
    local url=$1 sql=$2 psql out
    if ! psql=$(_db_psql); then
        printf 'psql is not installed\n'
        return 1
    fi
    if out=$(PGCONNECT_TIMEOUT=5 "$psql" -X -q -At -d "$url" -c "$sql" </dev/null 2>&1); then
        printf '%s\n' "$out"
        return 0
    fi
    # Only the first line: the rest of psql's error is usually a hint.
    printf '%s\n' "${out%%$'\n'*}"
    return 1
}

# Prints a port free on 127.0.0.1 from $1 on (trying 100), skipping $2:
# for the scripts that start clusters of their own beside any other. Start
# below Linux's ephemeral range (32768-60999): a port there may be the
# local end of some client's connection, which no listener shows and which
# makes the server's bind fail.
_db_free_port() {
    local port
    for ((port = $1; port < $1 + 100; port++)); do
        [[ $port == "${2:-}" ]] && continue
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            printf '%s\n' "$port"
            return 0
        fi
    done
    return 1
}

# Runs a command as $1, from / so that a cwd the user cannot read (e.g. under
# /root) doesn't break initdb or pg_ctl.
_db_as() {
    local user=$1
    shift
    if [[ $user == "$(id -un)" ]]; then
        (cd / && "$@")
    elif command -v runuser >/dev/null 2>&1; then
        (cd / && runuser -u "$user" -- "$@")
    else
        (cd / && su -s /bin/bash "$user" -c "$(printf '%q ' "$@")")
    fi
}

# Runs a command as $1 with its output appended to the log file $2, which
# ends up owned by $1 so that root and that user can take turns running this
# script on the same cluster.
_db_as_logged() {
    local user=$1 logfile=$2
    shift 2
    if [[ -e $logfile && ! -w $logfile ]]; then
        rm -f -- "$logfile" || return 1
    fi
    : >>"$logfile" || return 1
    if _db_is_root; then
        chown -- "$user" "$logfile" || return 1
    fi
    _db_as "$user" "$@" >>"$logfile" 2>&1
}

_db_use() {
    DATABASE_URL=$1
    export DATABASE_URL
    _db_log "using DATABASE_URL=$(_db_redact "$DATABASE_URL")"
}

_db_try_env_url() {
    [[ -n ${DATABASE_URL:-} ]] || return 1
    local err
    if err=$(_db_query "$DATABASE_URL" 'select 1'); then
        _db_use "$DATABASE_URL"
        return 0
    fi
    if [[ $err == 'psql is not installed' ]]; then
        _db_log "psql is not installed, so DATABASE_URL cannot be checked; using it as given"
        _db_use "$DATABASE_URL"
        return 0
    fi
    _db_log "DATABASE_URL=$(_db_redact "$DATABASE_URL") is not reachable ($err); looking for another server"
    return 1
}

_db_try_probe() {
    local host=${ORM_PG_PROBE_HOST:-127.0.0.1} port=${ORM_PG_PROBE_PORT:-5432}
    local base="postgres://postgres@$host:$port" out
    if ! out=$(_db_query "$base/postgres" "select count(*) from pg_database where datname = 'test'"); then
        _db_log "no usable server at $host:$port ($out)"
        return 1
    fi
    if [[ $out == 1 ]]; then
        _db_use "$base/test"
    else
        _db_use "$base/postgres"
    fi
}

_db_install_server() {
    _db_log "PostgreSQL server binaries (initdb, pg_ctl) not found"
    if ! apt_install postgresql; then
        _db_log "cannot start a private cluster: install PostgreSQL or set DATABASE_URL"
        return 1
    fi
}

_db_cluster_user() {
    if ! _db_is_root; then
        id -un
        return 0
    fi
    local user=${ORM_PG_USER:-}
    if [[ -z $user ]]; then
        if id -u postgres >/dev/null 2>&1; then
            user=postgres
        else
            user=orm-pg
        fi
    fi
    if ! id -u "$user" >/dev/null 2>&1; then
        _db_log "creating system user $user to run the private cluster (PostgreSQL refuses to run as root)"
        if ! useradd --system --no-create-home --home-dir / --shell /usr/sbin/nologin "$user" >&2; then
            _db_log "could not create user $user; set ORM_PG_USER to an existing unprivileged user"
            return 1
        fi
    fi
    printf '%s\n' "$user"
}

# Where the cluster target/$1 (default pg) lives when that is out of the
# cluster user's reach: stable per checkout, so that a later run and
# `db.sh stop` find it again.
_db_fallback_dir() {
    local name=${1:-pg} sum
    sum=$(printf '%s' "$_DB_ROOT" | cksum)
    printf '/tmp/orm-%s-%s\n' "$name" "${sum%% *}"
}

# Prints the directory to hold a cluster (data/, server.log), creating it
# for user $1: target/$2, by default target/pg.
_db_cluster_dir() {
    local user=$1 name=${2:-pg} dir alt owner
    dir="$_DB_ROOT/target/$name"
    if ! mkdir -p -- "$dir"; then
        _db_log "cannot create $dir"
        return 1
    fi
    if ! _db_is_root; then
        printf '%s\n' "$dir"
        return 0
    fi
    if chown -- "$user" "$dir" && chmod 700 -- "$dir" && _db_as "$user" test -w "$dir" -a -x "$dir"; then
        printf '%s\n' "$dir"
        return 0
    fi
    alt=$(_db_fallback_dir "$name")
    _db_log "user $user cannot reach $dir (a parent directory is not traversable); putting the private cluster in $alt instead"
    if ! { mkdir -p -- "$alt" && chown -- "$user" "$alt" && chmod 700 -- "$alt"; }; then
        _db_log "cannot prepare $alt for user $user"
        return 1
    fi
    owner=$(stat -c %U -- "$alt")
    if [[ $owner != "$user" ]]; then
        _db_log "$alt is owned by $owner, not $user; remove it or set ORM_PG_USER"
        return 1
    fi
    printf '%s\n' "$alt"
}

_db_start_private() {
    local bindir user dir data port log major url out
    port=${ORM_PG_PRIVATE_PORT:-25432}
    if ! bindir=$(_db_server_bindir); then
        _db_install_server || return 1
        if ! bindir=$(_db_server_bindir); then
            _db_log "installed postgresql, but still found no initdb and pg_ctl (looked on PATH and in /usr/lib/postgresql/*/bin)"
            return 1
        fi
    fi
    user=$(_db_cluster_user) || return 1
    dir=$(_db_cluster_dir "$user") || return 1
    data=$dir/data
    log=$dir/server.log
    _DB_PRIVATE_USER=$user
    _DB_PRIVATE_DIR=$dir
    _DB_PG_CTL=$bindir/pg_ctl

    if _db_as "$user" "$_DB_PG_CTL" -D "$data" status >/dev/null 2>&1; then
        # The fourth line of postmaster.pid is the port the server listens on.
        port=$(sed -n 4p "$data/postmaster.pid")
        url="postgres://postgres@127.0.0.1:$port/postgres"
        if out=$(_db_query "$url" 'select 1'); then
            _db_log "reusing the private cluster already running in $data (it will be left running)"
            _db_use "$url"
            return 0
        fi
        _db_log "a private cluster is running in $data but does not answer at $url ($out); stop it with: bash scripts/db.sh stop"
        return 1
    fi

    if out=$(_db_query "postgres://postgres@127.0.0.1:$port/postgres" 'select 1'); then
        _db_log "port $port is taken by another PostgreSQL server; set ORM_PG_PRIVATE_PORT to a free port"
        return 1
    fi

    major=$("$_DB_PG_CTL" --version | sed -E 's/.* ([0-9]+)[.0-9]*.*/\1/')
    if [[ -f $data/PG_VERSION && $(<"$data/PG_VERSION") != "$major" ]]; then
        _db_log "the private cluster in $data is from another PostgreSQL version; recreating it (it only holds test data)"
        rm -rf -- "$data"
    elif [[ -d $data && ! -f $data/PG_VERSION ]]; then
        _db_log "the private cluster in $data is incomplete; recreating it"
        rm -rf -- "$data"
    fi

    if [[ ! -d $data ]]; then
        _db_log "creating a private cluster in $data (PostgreSQL $major from $bindir, run as $user)"
        if ! _db_as_logged "$user" "$dir/initdb.log" "$bindir/initdb" -D "$data" -U postgres \
            --auth=trust --encoding=UTF8 --locale=C --no-sync; then
            _db_log "initdb failed; see $dir/initdb.log:"
            tail -n 20 -- "$dir/initdb.log" >&2
            return 1
        fi
        # Test data is disposable, so durability is traded for speed; TCP on
        # loopback only, and no Unix socket whose path could exceed the
        # length limit in a deep checkout.
        if ! cat >>"$data/postgresql.conf" <<'EOF'

# Added by scripts/db.sh for the test suite's private cluster.
listen_addresses = '127.0.0.1'
unix_socket_directories = ''
max_connections = 200
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
        then
            _db_log "cannot write $data/postgresql.conf"
            return 1
        fi
    fi

    _db_log "starting the private cluster on 127.0.0.1:$port (log: $log)"
    if ! _db_as_logged "$user" "$dir/ctl.log" "$_DB_PG_CTL" -D "$data" -l "$log" -w -t 60 -o "-p $port" start; then
        _db_log "pg_ctl start failed; last lines of $log:"
        tail -n 20 -- "$log" >&2
        return 1
    fi
    _DB_PRIVATE_STARTED=1
    url="postgres://postgres@127.0.0.1:$port/postgres"
    if ! out=$(_db_query "$url" 'select 1'); then
        _db_log "the private cluster started but does not answer at $url ($out)"
        db_stop_if_private
        return 1
    fi
    _db_use "$url"
}

# Makes a database available and exports DATABASE_URL.
db_setup() {
    _db_try_env_url && return 0
    _db_try_probe && return 0
    _db_start_private && return 0
    _db_log "no PostgreSQL database available (reasons above)"
    return 1
}

# Stops the private cluster if this shell started it, printing nothing: test
# scripts call it from an EXIT trap after cargo's output must stay last.
db_stop_if_private() {
    [[ $_DB_PRIVATE_STARTED == 1 ]] || return 0
    _db_as_logged "$_DB_PRIVATE_USER" "$_DB_PRIVATE_DIR/ctl.log" \
        "$_DB_PG_CTL" -D "$_DB_PRIVATE_DIR/data" -m fast -w stop >/dev/null 2>&1 || true
    _DB_PRIVATE_STARTED=0
}

# Stops the project's private cluster, whoever started it.
db_stop_private() {
    local dir data owner bindir stopped=0
    for dir in "$_DB_ROOT/target/pg" "$(_db_fallback_dir)"; do
        data=$dir/data
        [[ -f $data/postmaster.pid ]] || continue
        owner=$(stat -c %U -- "$data") || continue
        if ! bindir=$(_db_server_bindir); then
            _db_log "found a private cluster in $data but no pg_ctl to stop it"
            return 1
        fi
        _db_log "stopping the private cluster in $data"
        if ! _db_as_logged "$owner" "$dir/ctl.log" "$bindir/pg_ctl" -D "$data" -m fast -w stop; then
            _db_log "pg_ctl stop failed; see $dir/ctl.log"
            return 1
        fi
        stopped=1
    done
    ((stopped)) || _db_log "no private cluster is running"
    _DB_PRIVATE_STARTED=0
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    set -euo pipefail
    case ${1:-start} in
    start)
        db_setup || exit 1
        if [[ $_DB_PRIVATE_STARTED == 1 ]]; then
            _db_log "the private cluster keeps running; stop it with: bash scripts/db.sh stop"
        fi
        printf '%s\n' "$DATABASE_URL"
        ;;
    stop)
        db_stop_private
        ;;
    *)
        printf 'usage: bash scripts/db.sh [start|stop]\n' >&2
        exit 2
        ;;
    esac
elif [[ ${1:-} != --functions-only ]]; then
    db_setup
fi
