# lib.sh: shell helpers shared by compare.sh, production.sh and hold.sh (sourced, not run).

# raise_fd_limit SCRIPT NEED WHAT: raise the soft fd limit to the hard one, or exit 2
# with a message naming WHAT needs NEED descriptors when even the hard limit is too small.
raise_fd_limit() {
    local script=$1 need=$2 what=$3 hard
    hard=$(ulimit -Hn)
    if [[ "$hard" != unlimited && "$hard" -lt "$need" ]]; then
        echo "$script: $what needs ~$need fds but the hard limit is $hard;" \
             "raise it (e.g. in limits.conf or the container) or lower it" >&2
        exit 2
    fi
    ulimit -n "$hard"
}

# Waits until something accepts TCP on host:port, up to 10 s.
wait_port() {
    local host=$1 port=$2
    for _ in $(seq 1 100); do
        if (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    return 1
}

# Waits (up to 10 s) until GET /ready stops answering 503: portcullis listens before its
# store is connected and refuses sockets with 1013 until then, which would count as errors.
# A server without /ready (the baseline answers plain HTTP with an empty reply) passes at once.
wait_ready() {
    local host=$1 port=$2 code
    command -v curl >/dev/null || return 0
    for _ in $(seq 1 200); do
        code=$(curl -s -o /dev/null -w '%{http_code}' "http://$host:$port/ready" || true)
        if [[ "$code" != 503 ]]; then return 0; fi
        sleep 0.05
    done
    return 1
}
