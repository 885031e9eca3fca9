#!/usr/bin/env bash
# A private PostgreSQL cluster that takes the test databases over TLS only,
# for tests/tests/tls.rs.
#
#   source scripts/tls_db.sh   exports ORM_TLS_DATABASE_URL, ORM_TLS_CA and
#                              ORM_TLS_WRONG_CA and defines tls_db_stop (the
#                              sourcing shell stops the cluster); returns
#                              non-zero if the cluster cannot be started
#   bash scripts/tls_db.sh     prints those variables as `export` lines, for
#                              eval; the cluster keeps running
#   bash scripts/tls_db.sh stop  stops it
#
# Every start makes everything anew under target/pg-tls/ (or where
# scripts/db.sh would put a cluster target/pg cannot hold): with openssl, a
# CA, a server certificate it signs for the DNS name localhost only (so that
# connecting to 127.0.0.1 with sslmode=verify-full is a host name mismatch),
# and a second, unrelated CA; then a cluster on a free port of 127.0.0.1
# with ssl = on, whose pg_hba.conf accepts every database over TLS only
# (hostssl), except the postgres database, where orm-tests' TestDb creates
# and drops the test databases without TLS.
#
#   ORM_TLS_DATABASE_URL   postgres://postgres@localhost:PORT/postgres
#   ORM_TLS_CA             the CA that signed the server's certificate
#   ORM_TLS_WRONG_CA       a CA that did not
#
# The server binaries, the cluster's user (not root) and the cluster's
# directory are found as scripts/db.sh finds them, with its functions;
# openssl is installed with apt-get when missing and we are root. Messages
# go to stderr. Like scripts/db.sh, sourcing leaves the caller's shell
# options alone: every step checks its own result.

_TLS_ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
if ! declare -F _db_as >/dev/null; then
    # shellcheck source=scripts/db.sh
    source "$_TLS_ROOT/scripts/db.sh" --functions-only
fi
_TLS_STARTED=0
_TLS_USER=
_TLS_DIR=
_TLS_PG_CTL=

_tls_log() { printf 'tls_db.sh: %s\n' "$*" >&2; }

_tls_need_openssl() {
    command -v openssl >/dev/null 2>&1 && return 0
    _tls_log "openssl (it makes the test certificates) is not installed"
    apt_install openssl
}

# Prints a port free on 127.0.0.1 and on ::1 (localhost may resolve to
# either, and the client tries both). Below Linux's ephemeral range
# (32768-60999): a port there may be the local end of some client's
# connection, which no listener shows and which makes the server's bind
# fail.
_tls_free_port() {
    local port
    for ((port = 25440; port < 25540; port++)); do
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null &&
            ! (exec 3<>"/dev/tcp/::1/$port") 2>/dev/null; then
            printf '%s\n' "$port"
            return 0
        fi
    done
    return 1
}

# Makes the two CAs and the server's certificate and key in directory $1.
_tls_make_certs() {
    local certs=$1 ca
    local -a ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
    for ca in ca wrong-ca; do
        openssl req -x509 "${ec[@]}" -days 3650 -keyout "$certs/$ca.key" -out "$certs/$ca.crt" \
            -subj "/CN=orm test $ca" -addext 'basicConstraints=critical,CA:TRUE' \
            -addext 'keyUsage=critical,keyCertSign,cRLSign' || return 1
    done
    printf '%s\n' 'subjectAltName = DNS:localhost' 'basicConstraints = critical, CA:FALSE' \
        'keyUsage = critical, digitalSignature' 'extendedKeyUsage = serverAuth' >"$certs/server.ext" &&
        openssl req -new "${ec[@]}" -keyout "$certs/server.key" -out "$certs/server.csr" -subj '/CN=localhost' &&
        openssl x509 -req -in "$certs/server.csr" -CA "$certs/ca.crt" -CAkey "$certs/ca.key" \
            -set_serial "0x$(openssl rand -hex 8)" -days 3650 -extfile "$certs/server.ext" -out "$certs/server.crt"
}

# Writes the cluster's TLS settings and pg_hba.conf into data directory $1.
_tls_configure() {
    local data=$1 port=$2
    cat >>"$data/postgresql.conf" <<EOF || return 1

# Added by scripts/tls_db.sh for tests/tests/tls.rs.
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = ''
max_connections = 100
fsync = off
synchronous_commit = off
full_page_writes = off
ssl = on
ssl_cert_file = 'server.crt'
ssl_key_file = 'server.key'
EOF
    cat >"$data/pg_hba.conf" <<'EOF'
# Written by scripts/tls_db.sh: every database over TLS only, except the
# postgres database, from which orm-tests' TestDb (which has no TLS) creates
# and drops the test databases.
hostssl all      all      127.0.0.1/32 trust
host    postgres postgres 127.0.0.1/32 trust
EOF
}

_tls_stop_running() {
    local data=$_TLS_DIR/data
    [[ -f $data/postmaster.pid ]] || return 0
    _db_as_logged "$_TLS_USER" "$_TLS_DIR/ctl.log" "$_TLS_PG_CTL" -D "$data" -m fast -w stop >/dev/null 2>&1 || true
}

_tls_start() {
    local bindir certs data port url out
    _tls_need_openssl || return 1
    if ! bindir=$(_db_server_bindir); then
        _db_install_server || return 1
        if ! bindir=$(_db_server_bindir); then
            _tls_log "found no initdb and pg_ctl (looked on PATH and in /usr/lib/postgresql/*/bin)"
            return 1
        fi
    fi
    _TLS_PG_CTL=$bindir/pg_ctl
    _TLS_USER=$(_db_cluster_user) || return 1
    _TLS_DIR=$(_db_cluster_dir "$_TLS_USER" pg-tls) || return 1
    certs=$_TLS_DIR/certs
    data=$_TLS_DIR/data

    # A cluster left running by `bash scripts/tls_db.sh` or a killed run.
    _tls_stop_running
    if ! { rm -rf -- "$certs" "$data" && mkdir -p -- "$certs"; }; then
        _tls_log "cannot clear $_TLS_DIR"
        return 1
    fi
    if ! _tls_make_certs "$certs" >"$_TLS_DIR/openssl.log" 2>&1; then
        _tls_log "openssl failed; see $_TLS_DIR/openssl.log:"
        tail -n 20 -- "$_TLS_DIR/openssl.log" >&2
        return 1
    fi
    if ! port=$(_tls_free_port); then
        _tls_log "no free port in 25440-25539 on 127.0.0.1"
        return 1
    fi

    if ! _db_as_logged "$_TLS_USER" "$_TLS_DIR/initdb.log" "$bindir/initdb" -D "$data" -U postgres \
        --auth=trust --encoding=UTF8 --locale=C --no-sync; then
        _tls_log "initdb failed; see $_TLS_DIR/initdb.log:"
        tail -n 20 -- "$_TLS_DIR/initdb.log" >&2
        return 1
    fi
    # The server refuses a key that others can read.
    if ! { cp -- "$certs/server.crt" "$certs/server.key" "$data/" && chmod 600 -- "$data/server.key" &&
        { ! _db_is_root || chown -- "$_TLS_USER" "$data/server.crt" "$data/server.key"; } &&
        _tls_configure "$data" "$port"; }; then
        _tls_log "cannot configure the cluster in $data"
        return 1
    fi

    _tls_log "starting a TLS-only cluster on 127.0.0.1:$port (log: $_TLS_DIR/server.log)"
    if ! _db_as_logged "$_TLS_USER" "$_TLS_DIR/ctl.log" "$_TLS_PG_CTL" -D "$data" -l "$_TLS_DIR/server.log" \
        -w -t 60 start; then
        _tls_log "pg_ctl start failed; last lines of $_TLS_DIR/server.log:"
        tail -n 20 -- "$_TLS_DIR/server.log" >&2
        return 1
    fi
    _TLS_STARTED=1
    url="postgres://postgres@localhost:$port/postgres"
    # psql (libpq) checks the certificates independently of the code under test.
    if ! out=$(_db_query "$url?sslmode=verify-full&sslrootcert=$certs/ca.crt" \
        'select ssl from pg_stat_ssl where pid = pg_backend_pid()') || [[ $out != t ]]; then
        _tls_log "the TLS cluster started but does not answer over TLS at $url ($out)"
        tls_db_stop
        return 1
    fi
    export ORM_TLS_DATABASE_URL=$url ORM_TLS_CA=$certs/ca.crt ORM_TLS_WRONG_CA=$certs/wrong-ca.crt
    _tls_log "using ORM_TLS_DATABASE_URL=$url"
}

# Stops the TLS cluster if this shell started it, printing nothing: test
# scripts call it from an EXIT trap after cargo's output must stay last.
tls_db_stop() {
    [[ $_TLS_STARTED == 1 ]] || return 0
    _tls_stop_running
    _TLS_STARTED=0
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    set -euo pipefail
    case ${1:-start} in
    start)
        _tls_start || exit 1
        _tls_log "the TLS cluster keeps running; stop it with: bash scripts/tls_db.sh stop"
        printf 'export %s=%q\n' ORM_TLS_DATABASE_URL "$ORM_TLS_DATABASE_URL" ORM_TLS_CA "$ORM_TLS_CA" \
            ORM_TLS_WRONG_CA "$ORM_TLS_WRONG_CA"
        ;;
    stop)
        _TLS_USER=$(_db_cluster_user) && _TLS_DIR=$(_db_cluster_dir "$_TLS_USER" pg-tls) &&
            _TLS_PG_CTL=$(_db_server_bindir)/pg_ctl || exit 1
        _tls_stop_running
        ;;
    *)
        printf 'usage: bash scripts/tls_db.sh [start|stop]\n' >&2
        exit 2
        ;;
    esac
else
    _tls_start
fi
