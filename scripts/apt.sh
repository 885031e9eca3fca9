#!/usr/bin/env bash
# Installs missing Debian packages for the scripts that bring up what the
# tests and the demo need (PostgreSQL, PgBouncer, openssl, wrk, ...).
#
#   source scripts/apt.sh    defines apt_install; changes nothing else

# Installs the Debian packages given with apt-get, its output on stderr.
# Only root can, on a system that has apt-get; otherwise, or when apt-get
# fails, returns 1 saying what to install, for the caller to decide whether
# it can go on without. Every step checks its own result, as callers may
# run it where errexit is off.
apt_install() {
    if [[ $(id -u) != 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
        printf 'apt.sh: missing Debian packages: %s (install them as root: apt-get install %s)\n' "$*" "$*" >&2
        return 1
    fi
    printf 'apt.sh: installing %s with apt-get (output on stderr)\n' "$*" >&2
    if ! { DEBIAN_FRONTEND=noninteractive apt-get update -q &&
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@"; } >&2; then
        printf 'apt.sh: apt-get install %s failed (see above)\n' "$*" >&2
        return 1
    fi
}
