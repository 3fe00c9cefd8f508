#!/usr/bin/env bash
# Replay the envelope fuzzer's seed corpus through the plain driver (tests/fuzz/replay.c), so that every
# `make check` (and the sanitizer build) runs the parser over every seed. Each seed is replayed on its
# own so that a failure names the seed; the exit status is that of the first failing replay.
set -euo pipefail

if [ -z "${top_srcdir:-}" ]; then
    top_srcdir=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
fi
top_builddir=${top_builddir:-$top_srcdir}

replay=$top_builddir/tests/fuzz/replay-envelope
seeds=$top_srcdir/tests/fuzz/seeds/envelope

if [ ! -x "$replay" ]; then
    echo "missing $replay (built by make check)"
    exit 99
fi

files=()
if [ -d "$seeds" ]; then
    while IFS= read -r -d '' f; do
        files+=("$f")
    done < <(find "$seeds" -maxdepth 1 -type f ! -name '.*' -print0 | sort -z)
fi
if [ "${#files[@]}" -eq 0 ]; then
    echo "FAIL: no seed files in $seeds"
    exit 1
fi

echo "# replaying ${#files[@]} seed(s) from $seeds"
status=0
for f in "${files[@]}"; do
    rc=0
    "$replay" "$f" || rc=$?
    if [ "$rc" -ne 0 ]; then
        echo "FAIL: seed ${f##*/}: replay-envelope exited $rc"
        # 77 would read as "skipped" to automake; a failing seed is a failure.
        [ "$rc" -ne 77 ] || rc=1
        [ "$status" -ne 0 ] || status=$rc
    fi
done
exit "$status"
