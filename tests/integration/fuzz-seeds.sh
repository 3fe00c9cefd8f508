#!/usr/bin/env bash
# Replay every fuzz target's seed corpus through the plain driver (tests/fuzz/replay.c), so that every
# `make check` (and the sanitizer build) runs each parser over each of its seeds: target T's driver is
# tests/fuzz/replay-T and its seeds are tests/fuzz/seeds/T/. Each seed is replayed on its own so that a
# failure names the target and the seed. A missing driver is exit 99 (a hard error to automake); a target
# without seeds, or any failing seed, fails the test; otherwise the exit status is that of the first
# failing replay.
set -euo pipefail

if [ -z "${top_srcdir:-}" ]; then
    top_srcdir=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
fi
top_builddir=${top_builddir:-$top_srcdir}

# One entry per fuzz target (tests/fuzz/fuzz-T.c).
targets=(envelope config document jws register)

for t in "${targets[@]}"; do
    replay=$top_builddir/tests/fuzz/replay-$t
    if [ ! -x "$replay" ]; then
        echo "missing $replay (built by make check)"
        exit 99
    fi
done

status=0
for t in "${targets[@]}"; do
    replay=$top_builddir/tests/fuzz/replay-$t
    seeds=$top_srcdir/tests/fuzz/seeds/$t

    files=()
    if [ -d "$seeds" ]; then
        while IFS= read -r -d '' f; do
            files+=("$f")
        done < <(find "$seeds" -maxdepth 1 -type f ! -name '.*' -print0 | sort -z)
    fi
    if [ "${#files[@]}" -eq 0 ]; then
        echo "FAIL: no seed files in $seeds"
        [ "$status" -ne 0 ] || status=1
        continue
    fi

    echo "# replaying ${#files[@]} seed(s) from $seeds"
    for f in "${files[@]}"; do
        rc=0
        "$replay" "$f" || rc=$?
        if [ "$rc" -ne 0 ]; then
            echo "FAIL: seed $t/${f##*/}: replay-$t exited $rc"
            # 77 would read as "skipped" to automake; a failing seed is a failure.
            [ "$rc" -ne 77 ] || rc=1
            [ "$status" -ne 0 ] || status=$rc
        fi
    done
done
exit "$status"
