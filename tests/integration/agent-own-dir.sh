#!/usr/bin/env bash
# Regression test for issue 12, item 9: "the agent can overwrite its own state".
#
# With --dir under --root (the production layout has root "/"), the old agent wrote whatever path the
# server's answer named, so a template naming <dir>/identity.key or <dir>/ca.crt replaced the agent's own
# key or CA bundle (checked against the branch point: that sync exits 0 and identity.key changes). Now every
# folder on a path's way is compared (device, inode) with --dir, and such an answer is refused as invalid:
# exit 8, nothing written (not even the template's other, valid file), identity.key, identity.crt and ca.crt
# byte for byte as they were (SHA-256), no files.version — however --dir is spelled: absolute, relative with
# "..", through a link outside --root, with trailing slashes. A --root that is --dir or inside it is a usage
# error (exit 2). The refusal is about the folder, not the name: under another --root the same answer is
# written, with the agent's identity intact.
. "${top_srcdir:-$(cd "$(dirname "$0")/../.." && pwd)}/tests/integration/lib.sh"
ns_setup
ns_need sha256sum
. "$top_srcdir/tests/integration/agent-lib.sh"
agent_setup
agent_server_start

state_sums() { # DIR: the SHA-256 of the agent's identity files
    (cd "$1" && sha256sum identity.key identity.crt ca.crt)
}

# ---- a template naming <dir>/identity.key (after a valid file) ----
RK=$T/rk
DK=$RK/var/lib/nsagent
mkdir -p "$RK/var/lib" "$RK/etc/app"
agent_nonce vm-k selfkey "$T/nonce-k"
agent_rc 0 enroll --server "$SRV_URL" --ca "$T/ca.crt" --nonce-file "$T/nonce-k" --dir "$DK"
state_sums "$DK" >"$T/k.before"

refused_k() { # agent_rc's arguments after the exit status
    agent_rc 8 sync --server "$SRV_URL" --root "$RK" --on-change "echo ran >>$T/hook-k.log" "$@"
    assert_contains "$T/aerr" "/var/lib/nsagent/identity.key"
    assert_contains "$T/aerr" "agent's own folder (--dir)"
    state_sums "$DK" >"$T/k.after"
    diff "$T/k.before" "$T/k.after" >&2 || fail "sync $*: the agent's identity files changed"
    [ ! -e "$RK/etc/app/token" ] || fail "sync $*: the template's valid file was written"
    [ ! -e "$DK/files.version" ] || fail "sync $*: files.version written for a refused answer"
    [ ! -e "$T/hook-k.log" ] || fail "sync $*: --on-change ran for a refused answer"
    [ -z "$(find "$RK" -name '*.ns-tmp.*')" ] || fail "sync $*: a temporary file is left"
}
refused_k --dir "$DK"
# Relative, with "..": the same folder.
(cd "$T" && refused_k --dir rk/var/../var/lib/nsagent) || fail "a relative --dir with .. was not protected"
# Through a link outside --root.
ln -s "$DK" "$T/dir-link"
refused_k --dir "$T/dir-link"
# Trailing slashes.
refused_k --dir "$DK//"

# ---- a template naming <dir>/ca.crt ----
RC=$T/rc
DC=$RC/var/lib/nsagent
mkdir -p "$RC/var/lib"
agent_nonce vm-c selfca "$T/nonce-c"
agent_rc 0 enroll --server "$SRV_URL" --ca "$T/ca.crt" --nonce-file "$T/nonce-c" --dir "$DC"
state_sums "$DC" >"$T/c.before"
agent_rc 8 sync --server "$SRV_URL" --dir "$DC" --root "$RC"
assert_contains "$T/aerr" "/var/lib/nsagent/ca.crt"
assert_contains "$T/aerr" "agent's own folder (--dir)"
state_sums "$DC" >"$T/c.after"
diff "$T/c.before" "$T/c.after" >&2 || fail "the agent's identity files changed"
cmp -s "$DC/ca.crt" "$T/ca.crt" || fail "ca.crt is no longer the cluster's CA bundle"
[ ! -e "$DC/files.version" ] || fail "files.version written for a refused answer"

# ---- --root inside --dir (or --dir itself): a usage error, nothing fetched ----
mkdir -p "$DC/files"
agent_rc 2 sync --server "$SRV_URL" --dir "$DC" --root "$DC/files"
assert_contains "$T/aerr" "inside it"
agent_rc 2 sync --server "$SRV_URL" --dir "$DC" --root "$DC"
[ -z "$(ls -A "$DC/files")" ] || fail "a file was written below a --root inside --dir"
diff "$T/c.before" <(state_sums "$DC") >&2 || fail "the agent's identity files changed"

# ---- the refusal is about --dir, not a name: under another root the same answer is written ----
mkdir -p "$T/elsewhere"
agent_rc 0 sync --server "$SRV_URL" --dir "$DK" --root "$T/elsewhere"
assert_contains "$T/aout" "2 file(s), 2 changed"
[ -f "$T/elsewhere/var/lib/nsagent/identity.key" ] || fail "the file was not written under the other root"
cmp -s "$T/elsewhere/var/lib/nsagent/identity.key" "$DK/identity.key" && fail "the agent's key was written"
diff "$T/k.before" <(state_sums "$DK") >&2 || fail "the agent's identity files changed"
echo "# agent-own-dir: ok"
