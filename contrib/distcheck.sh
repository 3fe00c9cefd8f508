#!/usr/bin/env bash
# make distcheck in a configured build folder (contrib/test.sh runs it on _build/): the tarball is made,
# unpacked, built read-only out of tree, installed under a temp prefix (programs, man pages, units,
# completions, examples), `make installcheck` runs the installed programs' --version, a smoke subset of the
# tests runs (--enable-smoke-check: see SMOKE_TESTS in Makefile.am; the full suite runs once, in test.sh),
# then uninstall must leave nothing behind and distclean nothing in the build folder.
#
#   bash contrib/distcheck.sh BUILD_DIR     prints "distcheck: ok (TARBALL)" and exits 0, or the end of the log
#                                           and exits 1. The log: BUILD_DIR/distcheck.out.
set -uo pipefail
dir=${1:?usage: distcheck.sh BUILD_DIR}
if ! make --no-print-directory -C "$dir" -j2 distcheck >"$dir/distcheck.out" 2>&1; then
    echo "distcheck: failed; last lines of $dir/distcheck.out:" >&2
    tail -n 60 "$dir/distcheck.out" >&2
    exit 1
fi
tarball=$(ls -t "$dir"/nstance-secrets-*.tar.gz 2>/dev/null | head -n 1)
echo "distcheck: ok ($tarball)"
