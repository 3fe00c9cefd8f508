#!/usr/bin/env bash
# Build and test everything, the way CI does:  bash contrib/test.sh  (from the repository root).
#
#   1. contrib/deps.sh installs missing Debian packages (needs root, or prints the command); npm ci installs
#      s3rver into contrib/s3rver/node_modules for the S3 tests.
#   2. autoreconf -fi when ./configure is missing or older than configure.ac / Makefile.am.
#   3. A normal out-of-tree build in _build/:      ../configure --enable-werror && make -j2 && make -j2 bench
#      && make -j2 check  (`make bench` builds the benchmark programs, not run, so that they cannot rot)
#   4. A sanitizer build in _sanitize/ (ASan+UBSan, clang if present, else gcc), also --enable-werror:
#      make -j2 check. Runs even when step 3 failed.
#   Both builds treat compiler warnings as errors (--enable-werror adds -Werror to the warning flags), so
#   warn_unused_result and the rest are enforced.
#   One Ceph cluster with RGW (tests/tools/ceph-rgw.sh, in a temporary folder) is started before step 3 and
#   shared by the RGW tests of both builds (NS_RGW_ENDPOINT, NS_RGW_ACCESS_KEY, NS_RGW_SECRET_KEY,
#   NS_RGW_DIR exported; each test makes its own buckets); it is stopped when this script exits. If it
#   does not start, the variables stay unset and each RGW test tries its own cluster, and errors (99) if
#   that fails too: never a silent skip.
#
# Logs of failing tests (FAIL, ERROR, XPASS, SKIP) go to stderr. The last line on stdout is exactly
#   N passed, N failed
# summed over both builds from each test-suite.log (passed = PASS + XFAIL, failed = FAIL + ERROR + XPASS
# + SKIP) and the packaging step (5). A SKIP is a failure: every service a test needs is started here (or
# by the test itself), so nothing may skip silently; the skipped tests are named on stderr.
# A build that fails to configure or compile counts as one failure, and so does `make bench` failing.
# Exit status 0 iff nothing failed.
#
# Environment:
#   CI=true             plain output, no colours or other terminal tricks.
#   NS_SKIP_SANITIZE=1  skip the sanitizer build (quick local runs).
#   NS_SKIP_PACKAGING=1 skip step 5 (quick local runs, or a machine where packages must not be installed).
#
#   5. Packaging (contrib/distcheck.sh, contrib/pkg-deb.sh): make distcheck on _build/ (smoke tests only),
#      then the Debian packages built from its tarball, lintian, installed, the demo run against them,
#      purged. Each counts as one test in the summary.
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
root=$(pwd)

total_passed=0
total_failed=0

if [ "${CI:-}" = "true" ] || [ ! -t 1 ]; then
    export AM_COLOR_TESTS=no
    export TERM=dumb
else
    export AM_COLOR_TESTS=always
fi

say() {
    printf '==> %s\n' "$*"
}

warn() {
    printf 'test.sh: %s\n' "$*" >&2
}

# Show the end of a build log on stderr.
show_tail() {
    local file=$1 n=${2:-60}
    if [ -f "$file" ]; then
        printf -- '---- last %d lines of %s ----\n' "$n" "${file#"$root"/}" >&2
        tail -n "$n" "$file" >&2
        printf -- '---- end of %s ----\n' "${file#"$root"/}" >&2
    fi
}

# Sum the header counts of a test-suite.log ("# PASS:  12"). Prints "PASS XFAIL FAIL ERROR XPASS SKIP TOTAL".
# Only the first occurrence of each key counts: failed tests' logs are appended below the header.
parse_suite_log() {
    awk '
        /^# (TOTAL|PASS|SKIP|XFAIL|FAIL|XPASS|ERROR):[ \t]*[0-9]+[ \t]*$/ {
            key = $2; sub(":", "", key)
            if (!(key in n)) n[key] = $3 + 0
        }
        END { printf "%d %d %d %d %d %d %d\n", n["PASS"], n["XFAIL"], n["FAIL"], n["ERROR"], n["XPASS"], n["SKIP"], n["TOTAL"] }
    ' "$1"
}

# Print the log of every test whose .trs records FAIL, ERROR, XPASS or SKIP, to stderr.
show_failed_logs() {
    local dir=$1 trs log
    [ -d "$dir/tests" ] || return 0
    while IFS= read -r trs; do
        if grep -qE '^:test-result: (FAIL|ERROR|XPASS|SKIP)' "$trs"; then
            log=${trs%.trs}.log
            printf '==== %s ====\n' "${log#"$root"/}" >&2
            if [ -f "$log" ]; then
                cat "$log" >&2
            else
                printf '(no log file)\n' >&2
            fi
            printf '==== end of %s ====\n' "${log#"$root"/}" >&2
        fi
    done < <(find "$dir/tests" -name '*.trs' -type f | sort)
}

# count_build NAME PASSED FAILED
count_build() {
    printf '%s: %d passed, %d failed\n' "$1" "$2" "$3"
    total_passed=$((total_passed + $2))
    total_failed=$((total_failed + $3))
}

# run_build NAME DIR BUILD_ALL(yes|no) CONFIGURE_ARGS...  (BUILD_ALL yes: make, then make bench, first)
run_build() {
    local name=$1 dir=$root/$2 build_all=$3 rc=0 bench_failed=0
    shift 3

    say "$name: configure in ${dir#"$root"/}/${*:+ $*}"
    mkdir -p "$dir" || {
        count_build "$name" 0 1
        return
    }
    if ! (cd "$dir" && ../configure "$@") >"$dir/configure.out" 2>&1; then
        warn "$name: configure failed (see ${dir#"$root"/}/config.log)"
        show_tail "$dir/configure.out" 30
        count_build "$name" 0 1
        return
    fi

    if [ "$build_all" = yes ]; then
        say "$name: make -j2"
        if ! make --no-print-directory -C "$dir" -j2 >"$dir/make.out" 2>&1; then
            warn "$name: build failed"
            show_tail "$dir/make.out"
            count_build "$name" 0 1
            return
        fi
        say "$name: make -j2 bench"
        if ! make --no-print-directory -C "$dir" -j2 bench >"$dir/bench.out" 2>&1; then
            warn "$name: the benchmark programs do not build (make bench)"
            show_tail "$dir/bench.out"
            bench_failed=1
        fi
    fi

    # Stale results from an earlier run must not be read as this run's.
    rm -f "$dir/test-suite.log"
    [ -d "$dir/tests" ] && find "$dir/tests" \( -name '*.trs' -o -name '*.log' \) -type f -delete

    say "$name: make -j2 check"
    make --no-print-directory -C "$dir" -j2 check 2>&1 | tee "$dir/check.out"
    rc=${PIPESTATUS[0]}

    if [ ! -f "$dir/test-suite.log" ]; then
        warn "$name: 'make check' failed before running the tests (exit $rc)"
        show_tail "$dir/check.out"
        count_build "$name" 0 1
        return
    fi

    local pass xfail fail error xpass skip total passed failed
    read -r pass xfail fail error xpass skip total < <(parse_suite_log "$dir/test-suite.log")
    passed=$((pass + xfail))
    failed=$((fail + error + xpass + skip + bench_failed))
    show_failed_logs "$dir"
    if [ "$rc" -ne 0 ] && [ "$failed" -eq 0 ]; then
        warn "$name: 'make check' exited $rc but test-suite.log records no failure"
        show_tail "$dir/check.out"
        failed=1
    fi
    if [ "$total" -eq 0 ]; then
        warn "$name: test-suite.log records no tests at all"
        failed=$((failed + 1))
    fi
    if [ "$skip" -gt 0 ]; then
        warn "$name: $skip test(s) skipped, counted as failed (never a silent skip):"
        find "$dir/tests" -name '*.trs' -type f -exec grep -l '^:test-result: SKIP' {} + | sort |
            sed "s|^$dir/||; s|\.trs\$||; s|^|    |" >&2
    fi
    count_build "$name" "$passed" "$failed"
}

# Step 5: distcheck, then the .debs from its tarball (installed, exercised, purged). One test each.
run_packaging() {
    if [ "${NS_SKIP_PACKAGING:-}" = 1 ]; then
        say "packaging skipped (NS_SKIP_PACKAGING=1)"
        return
    fi
    say "packaging: make distcheck"
    if ! bash contrib/distcheck.sh "$root/_build"; then
        count_build distcheck 0 1
        count_build pkg-deb 0 1
        return
    fi
    count_build distcheck 1 0
    say "packaging: Debian packages"
    if bash contrib/pkg-deb.sh "$(ls -t "$root"/_build/nstance-secrets-*.tar.gz | head -n 1)"; then
        count_build pkg-deb 1 0
    else
        count_build pkg-deb 0 1
    fi
}

main() {
    local builds=2
    [ "${NS_SKIP_SANITIZE:-}" = 1 ] && builds=1

    say "dependencies"
    if ! bash contrib/deps.sh; then
        warn "contrib/deps.sh failed; continuing, the build will tell what is missing"
    fi

    # s3rver for the S3 integration tests, pinned by contrib/s3rver/package-lock.json.
    if [ ! -f contrib/s3rver/node_modules/s3rver/bin/s3rver.js ] ||
        [ contrib/s3rver/package-lock.json -nt contrib/s3rver/node_modules/s3rver/bin/s3rver.js ]; then
        say "npm ci --prefix contrib/s3rver"
        if ! npm ci --prefix contrib/s3rver --no-audit --no-fund >/dev/null 2>&1; then
            warn "npm ci --prefix contrib/s3rver failed; the S3 tests will report it"
        fi
    fi

    # One Ceph cluster with RGW for the RGW tests of both builds.
    rgw_dir=$(mktemp -d /tmp/ns-ceph.XXXXXX)
    trap 'bash "$root/tests/tools/ceph-rgw.sh" stop "$rgw_dir/c" >/dev/null 2>&1; rm -rf "$rgw_dir"' EXIT
    say "Ceph RGW (tests/tools/ceph-rgw.sh start)"
    if bash tests/tools/ceph-rgw.sh start "$rgw_dir/c" >"$rgw_dir/env" 2>"$rgw_dir/err"; then
        set -a
        . "$rgw_dir/env"
        set +a
        export NS_RGW_DIR=$rgw_dir/c
        say "Ceph RGW on $NS_RGW_ENDPOINT"
    else
        warn "Ceph RGW did not start; the RGW tests will each try their own cluster"
        show_tail "$rgw_dir/err" 40
    fi

    if [ ! -x configure ] || [ configure.ac -nt configure ] || [ Makefile.am -nt configure ]; then
        say "autoreconf -fi"
        local out
        out=$(mktemp)
        if ! autoreconf -fi >"$out" 2>&1; then
            warn "autoreconf failed"
            show_tail "$out" 40
            rm -f "$out"
            # Neither build can run: each counts as one failure.
            printf '%d passed, %d failed\n' 0 "$builds"
            exit 1
        fi
        rm -f "$out"
    fi

    run_build build _build yes --enable-werror

    if [ "$builds" -eq 2 ]; then
        local cc=gcc
        command -v clang >/dev/null 2>&1 && cc=clang
        export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
        export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
        export LSAN_OPTIONS="suppressions=$root/tests/lsan.supp:print_suppressions=0"
        run_build sanitize _sanitize no --enable-werror --enable-sanitizers CC="$cc"
    else
        say "sanitizer build skipped (NS_SKIP_SANITIZE=1)"
    fi

    run_packaging

    printf '%d passed, %d failed\n' "$total_passed" "$total_failed"
    [ "$total_failed" -eq 0 ]
}

main "$@"
