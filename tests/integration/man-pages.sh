#!/usr/bin/env bash
# Covers: the man pages cannot drift from the programs and doc/config.md (issue 16).
#   1. For each program, the long options in its --help, the long options its sources accept (struct option
#      tables) and the long options its man page names are one and the same set.
#   2. The config keys of doc/config.md's tables (first column) and the keys nstance-secrets.yaml(5) lists
#      (.TP entries) are the same set.
#   3. The bash completions name the same long options, parse, and complete a command, a sub-command and an
#      option of each program; --version prints the configured version.
# A man page that misses an option, or names one that no longer exists, fails the test.
set -euo pipefail
: "${top_srcdir:?}" "${top_builddir:?}"
cd "$top_srcdir"
command -v sed >/dev/null && command -v comm >/dev/null || {
    echo "sed/comm not installed"
    exit 99
}
bad=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Long options named in troff: \-\-name (the escapes removed).
man_opts() { sed -e 's/\\-/-/g' -e 's/\\f[BIRP]//g' "$1" | grep -o -- '--[a-z][a-z0-9-]*' | sort -u; }
help_opts() { "$1" --help | grep -o -- '--[a-z][a-z0-9-]*' | sort -u; }
src_opts() { cat "$@" | grep -oE '\{"[a-z0-9-]+", *[a-z_]+_argument|"--[a-z][a-z0-9-]*"' | sed -E 's/^\{?"(--)?([^"]*)".*/--\2/' | sort -u; }

# compare WHAT A-FILE B-FILE A-NAME B-NAME
compare() {
    local extra
    extra=$(comm -23 "$2" "$3")
    if [ -n "$extra" ]; then
        echo "FAIL $1: in $4 but not in $5: $(echo "$extra" | tr '\n' ' ')"
        bad=1
    fi
}

check_program() {
    local prog=$1 page=$2 comp=$3
    shift 3
    help_opts "$top_builddir/$prog" >"$tmp/help"
    src_opts "$@" >"$tmp/src"
    man_opts "$page" >"$tmp/man"
    grep -o -- '--[a-z][a-z0-9-]*' "$comp" | sort -u >"$tmp/comp"
    [ -s "$tmp/help" ] && [ -s "$tmp/src" ] && [ -s "$tmp/man" ] || {
        echo "FAIL $prog: an empty option list"
        bad=1
    }
    compare "$prog" "$tmp/help" "$tmp/man" "--help" "$page"
    compare "$prog" "$tmp/src" "$tmp/man" "the sources" "$page"
    compare "$prog" "$tmp/man" "$tmp/src" "$page" "the sources"
    compare "$prog" "$tmp/src" "$tmp/comp" "the sources" "$comp"
    compare "$prog" "$tmp/comp" "$tmp/src" "$comp" "the sources"
    local v
    v=$("$top_builddir/$prog" --version)
    if ! grep -q "^#define PACKAGE_VERSION \"${v##* }\"" "$top_builddir/ns-build.h"; then
        echo "FAIL $prog --version: '$v'"
        bad=1
    fi
    echo "ok $prog: $(wc -l <"$tmp/man") long options in $page, --help, the sources and $comp"
}

check_program nstance-secrets man/nstance-secrets.8 contrib/completion/nstance-secrets src/cli/*.c src/settings/settings.c
check_program nstance-secretsd man/nstance-secretsd.8 contrib/completion/nstance-secretsd src/server/main.c \
    src/settings/settings.c
check_program nstance-secrets-agent man/nstance-secrets-agent.8 contrib/completion/nstance-secrets-agent \
    src/agent/main.c

# The CLI's commands: each command word of --help is in the man page's COMMANDS section.
"$top_builddir/nstance-secrets" --help | sed -n 's/^  \([a-z][a-z]*\) .*/\1/p' | sort -u >"$tmp/cmds"
sed -e 's/\\-/-/g' -e 's/\\f[BIRP]//g' man/nstance-secrets.8 | sed -n '/^\.SH COMMANDS/,/^\.SH /p' |
    grep -o '^\.B[IR]* "\?[a-z]*' | sed 's/^\.B[IR]* "\?//' | sort -u >"$tmp/mancmds"
compare "nstance-secrets commands" "$tmp/cmds" "$tmp/mancmds" "--help" "man/nstance-secrets.8"

# Config keys: doc/config.md tables' first column ("…files[]" is short for "templates.<name>.files[]").
grep '^| `' doc/config.md | awk -F'|' '{print $2}' | grep -o '`[^`]*`' | tr -d '`' |
    sed 's/^…/templates.<name>./' | sort -u >"$tmp/keys-doc"
sed -e 's/\\-/-/g' -e 's/\\f[BIRP]//g' man/nstance-secrets.yaml.5 | awk '/^\.TP/ { getline; print }' |
    sed -e 's/^\.BR* //' -e 's/"[^"]*"//g' | tr -s ', ' '\n\n' | grep -v '^$' | sort -u >"$tmp/keys-man"
[ "$(wc -l <"$tmp/keys-doc")" -gt 50 ] || {
    echo "FAIL: only $(wc -l <"$tmp/keys-doc") keys read from doc/config.md"
    bad=1
}
compare "config keys" "$tmp/keys-doc" "$tmp/keys-man" "doc/config.md" "man/nstance-secrets.yaml.5"
compare "config keys" "$tmp/keys-man" "$tmp/keys-doc" "man/nstance-secrets.yaml.5" "doc/config.md"
echo "ok config keys: $(wc -l <"$tmp/keys-doc") in doc/config.md and nstance-secrets.yaml(5)"

# The completions parse, and (with bash-completion installed) complete a command, a sub-command and an option.
for f in contrib/completion/*; do
    bash -n "$f" || {
        echo "FAIL $f: bash syntax"
        bad=1
    }
done
bc=/usr/share/bash-completion/bash_completion
[ -f "$bc" ] || {
    echo "bash-completion not installed"
    exit 99
}
{
    # complete PROGRAM-FILE FUNCTION WORDS...: prints COMPREPLY for the last word.
    complete_words() {
        bash -c '. "$1" >/dev/null 2>&1; . "$2"; f=$3; shift 3; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1))
            COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}; "$f" "$1" "${COMP_WORDS[-1]}" "${COMP_WORDS[-2]:-}"
            printf "%s\n" "${COMPREPLY[@]}"' _ "$bc" "$@"
    }
    got=$(complete_words contrib/completion/nstance-secrets _nstance_secrets nstance-secrets con | tr '\n' ' ')
    [ "$got" = "config " ] || { echo "FAIL completion 'nstance-secrets con': '$got'"; bad=1; }
    got=$(complete_words contrib/completion/nstance-secrets _nstance_secrets nstance-secrets ca i | tr '\n' ' ')
    [ "$got" = "init issue " ] || { echo "FAIL completion 'nstance-secrets ca i': '$got'"; bad=1; }
    got=$(complete_words contrib/completion/nstance-secrets-agent _nstance_secrets_agent nstance-secrets-agent run --in |
        tr '\n' ' ')
    [ "$got" = "--interval " ] || { echo "FAIL completion 'nstance-secrets-agent run --in': '$got'"; bad=1; }
    got=$(complete_words contrib/completion/nstance-secretsd _nstance_secretsd nstance-secretsd --v | tr '\n' ' ')
    [ "$got" = "--verbose --version " ] || { echo "FAIL completion 'nstance-secretsd --v': '$got'"; bad=1; }
    echo "ok bash completions"
}
exit "$bad"
