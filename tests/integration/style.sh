#!/usr/bin/env bash
# Covers: every C source and header is formatted as .clang-format says, and every .c includes the build header
# (ns-build.h, from configure: _GNU_SOURCE and the build's switches) before anything else (DESIGN.md §5).
set -euo pipefail
cd "$top_srcdir"
command -v clang-format >/dev/null || { echo "clang-format not installed"; exit 99; }
bad=0
while IFS= read -r f; do
    if ! clang-format --dry-run --Werror "$f" >/dev/null 2>&1; then
        echo "not formatted: $f (run: clang-format -i $f)"
        bad=1
    fi
done < <(find src pkcs11 tests bench -name '*.[ch]' 2>/dev/null | sort)
# The build header first: a file that includes it later, or not at all, is built without _GNU_SOURCE and the
# configure switches for part of its includes. (It was named config.h, which src/config/config.c's own
# #include "config.h" silently resolved to src/config/config.h.)
while IFS= read -r f; do
    first=$(grep -m1 '^#include' "$f" || true)
    if [ "$first" != '#include "ns-build.h"' ]; then
        echo "$f: the first #include must be \"ns-build.h\" (is: ${first:-none})"
        bad=1
    fi
done < <(find src pkcs11 tests bench -name '*.c' 2>/dev/null | sort)
if [ -n "$(find src pkcs11 tests bench -name ns-build.h)" ]; then echo "a source file named ns-build.h would shadow the build header"; bad=1; fi
exit "$bad"
