#!/usr/bin/env bash
# Run a command inside a cgroup v1 memory limit and print the group's peak memory use.
#
#   tools/memlimit_run.sh LIMIT FILE -- COMMAND [ARGS...]
#   tools/memlimit_run.sh 1200M m.gguf -- .venv/bin/python tools/moe_traffic.py m.gguf
#
# LIMIT is memory.limit_in_bytes (e.g. 1200M): anonymous memory plus the page cache the group
# brings in, so a memory-mapped model larger than LIMIT must have its pages reclaimed and
# re-read while it runs. FILE's cached pages are dropped first (posix_fadvise DONTNEED, that
# file only): pages another group cached are not charged to this one and would hide the limit.
# Needs root and /sys/fs/cgroup/memory (cgroup v1). Prints limit_bytes, max_usage_bytes
# (memory.max_usage_in_bytes), failcnt (times the limit was hit) and the command's exit code.
set -euo pipefail
limit=$1 file=$2
shift 2
[ "${1:-}" = "--" ] && shift
cg=/sys/fs/cgroup/memory/ggr-memlimit-$$
mkdir "$cg"
trap 'rmdir "$cg"' EXIT
echo "$limit" > "$cg/memory.limit_in_bytes"
python3 -c 'import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
os.fsync(fd)                      # dirty pages are not dropped
os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)' "$file"
rc=0
( echo "$BASHPID" > "$cg/cgroup.procs" && exec "$@" ) || rc=$?
echo "limit_bytes=$(cat "$cg/memory.limit_in_bytes")" \
     "max_usage_bytes=$(cat "$cg/memory.max_usage_in_bytes")" \
     "failcnt=$(cat "$cg/memory.failcnt") exit_code=$rc"
exit "$rc"
