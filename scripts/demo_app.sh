#!/usr/bin/env bash
# Starts and stops a built demo-app binary for the scripts that test it
# (conformance, load). Source it:
#
#   demo_app_start BINARY LOG [NAME=VALUE...]
#       starts BINARY on a free loopback port with the given environment,
#       output in LOG; waits until GET /health answers, then sets
#       DEMO_APP_URL (http://127.0.0.1:PORT) and DEMO_APP_PID
#   demo_app_stop
#       sends SIGTERM (graceful shutdown) and returns the app's exit status
#   demo_app_get PATH
#       prints the body of GET PATH (HTTP/1.0 over bash's /dev/tcp, so no
#       client needs to be installed)

DEMO_APP_PID=
DEMO_APP_URL=

demo_app_get() {
    local hostport=${DEMO_APP_URL#http://}
    (
        exec 3<>"/dev/tcp/${hostport%:*}/${hostport##*:}" || exit 1
        printf 'GET %s HTTP/1.0\r\nHost: %s\r\n\r\n' "$1" "$hostport" >&3
        local line status
        IFS= read -r status <&3
        [[ $status == *" 200 "* ]] || exit 1
        # Headers end at the first empty line.
        while IFS= read -r line <&3 && [[ $line != $'\r' ]]; do :; done
        cat <&3
    ) 2>/dev/null
}

demo_app_start() {
    local binary=$1 log=$2 url deadline
    shift 2
    # Created here, so the first look for the start-up line finds a file.
    : >"$log"
    env PORT=0 HOST=127.0.0.1 "$@" "$binary" >"$log" 2>&1 &
    DEMO_APP_PID=$!
    deadline=$((SECONDS + 60))
    while ((SECONDS < deadline)); do
        if ! kill -0 "$DEMO_APP_PID" 2>/dev/null; then
            printf 'demo_app.sh: the app exited during start-up; last lines of %s:\n' "$log" >&2
            tail -n 20 -- "$log" >&2
            DEMO_APP_PID=
            return 1
        fi
        # The start-up line "serving at http://127.0.0.1:PORT/api" names
        # the port the app bound.
        url=$(grep -o -m 1 'serving at http://[0-9.]*:[0-9]*' "$log" || true)
        if [[ -n $url ]]; then
            DEMO_APP_URL=${url#serving at }
            if demo_app_get /health >/dev/null; then
                return 0
            fi
        fi
        sleep 0.2
    done
    printf 'demo_app.sh: the app did not answer within 60 s; last lines of %s:\n' "$log" >&2
    tail -n 20 -- "$log" >&2
    demo_app_stop || true
    return 1
}

demo_app_stop() {
    [[ -n $DEMO_APP_PID ]] || return 0
    local pid=$DEMO_APP_PID status=0
    DEMO_APP_PID=
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" || status=$?
    return "$status"
}
