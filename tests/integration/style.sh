#!/usr/bin/env bash
# Covers: every C source and header is formatted as .clang-format says (DESIGN.md §5).
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
exit "$bad"
