#!/usr/bin/env bash
# Databases of their own for the demo app's scripts (demo, conformance, load),
# on the server that scripts/db.sh found. Source it after scripts/db.sh:
#
#   app_db_url NAME          prints DATABASE_URL with the database replaced by NAME
#   app_db_create NAME       creates database NAME unless it exists
#   app_db_recreate NAME     drops database NAME if it exists, then creates it
#   app_db_drop NAME         drops database NAME if it exists
#   app_db_query NAME SQL    runs SQL in database NAME, prints the unaligned result
#
# Each needs psql (Debian's postgresql-client), as scripts/db.sh does.

# Replaces the database in a postgres:// URL or a key=value connection string.
app_db_url() {
    local name=$1 url=${DATABASE_URL:?DATABASE_URL is not set: source scripts/db.sh first}
    case $url in
    postgres://* | postgresql://*)
        local scheme=${url%%://*} rest=${url#*://} query=
        if [[ $rest == *\?* ]]; then
            query="?${rest#*\?}"
            rest=${rest%%\?*}
        fi
        printf '%s://%s/%s%s\n' "$scheme" "${rest%%/*}" "$name" "$query"
        ;;
    *)
        # In key=value form the last setting of a keyword wins.
        printf '%s dbname=%s\n' "$url" "$name"
        ;;
    esac
}

# Runs SQL against the server's maintenance database (DATABASE_URL's own).
_app_db_admin() {
    _db_query "$DATABASE_URL" "$1"
}

app_db_query() {
    _db_query "$(app_db_url "$1")" "$2"
}

app_db_create() {
    local name=$1 out
    out=$(_app_db_admin "SELECT count(*) FROM pg_database WHERE datname = '$name'") || {
        printf 'app_db.sh: cannot query the server: %s\n' "$out" >&2
        return 1
    }
    [[ $out == 1 ]] && return 0
    out=$(_app_db_admin "CREATE DATABASE \"$name\"") || {
        printf 'app_db.sh: cannot create database %s: %s\n' "$name" "$out" >&2
        return 1
    }
}

app_db_drop() {
    local name=$1 out
    out=$(_app_db_admin "DROP DATABASE IF EXISTS \"$name\" WITH (FORCE)") || {
        printf 'app_db.sh: cannot drop database %s: %s\n' "$name" "$out" >&2
        return 1
    }
}

app_db_recreate() {
    app_db_drop "$1" && app_db_create "$1"
}
