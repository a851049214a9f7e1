# lib.sh: shell helpers shared by compare.sh and hold.sh (sourced, not run).

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
