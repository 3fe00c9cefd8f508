#!/usr/bin/env bash
# Covers: the systemd units of contrib/systemd/ (issue 16), as built for installation (paths substituted).
#   1. Each unit has the hardening the issue asks for (NoNewPrivileges, ProtectSystem, PrivateTmp, ProtectHome,
#      LimitCORE=0, MemoryDenyWriteExecute, RestrictAddressFamilies, SystemCallFilter=@system-service);
#      the server runs as nstance with StateDirectory/CacheDirectory/ConfigurationDirectory, Type=exec,
#      ExecReload sending SIGHUP, LimitNOFILE above the default server.max_connections (1024), and its
#      ExecStart/ExecStartPre name the configured programs; the agent runs `run`.
#   2. `systemd-analyze security --offline=true`: the server's exposure at most 2.0, the agent's at most 2.5.
set -euo pipefail
: "${top_srcdir:?}" "${top_builddir:?}"
command -v systemd-analyze >/dev/null || {
    echo "systemd-analyze not installed"
    exit 99
}
env -u MAKEFLAGS -u MFLAGS make -s -C "$top_builddir" contrib/systemd/nstance-secretsd.service contrib/systemd/nstance-secrets-agent.service
srv=$top_builddir/contrib/systemd/nstance-secretsd.service
agt=$top_builddir/contrib/systemd/nstance-secrets-agent.service
sbindir=$(printf 'ns-print-sbindir:\n\t@echo $(sbindir)\n' |
    env -u MAKEFLAGS -u MFLAGS make -s -C "$top_builddir" -f Makefile -f - ns-print-sbindir)
[ -n "$sbindir" ] || {
    echo "FAIL: sbindir not found"
    exit 1
}
bad=0
need() { # FILE LINE-REGEX
    grep -Eq "^$2\$" "$1" || {
        echo "FAIL $(basename "$1"): no line matching '$2'"
        bad=1
    }
}
for u in "$srv" "$agt"; do
    for l in 'NoNewPrivileges=yes' 'ProtectSystem=(strict|yes)' 'PrivateTmp=yes' 'ProtectHome=yes' 'LimitCORE=0' \
        'MemoryDenyWriteExecute=yes' 'RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6' \
        'SystemCallFilter=@system-service' 'Type=exec' 'StateDirectory=.+'; do
        need "$u" "$l"
    done
    ! grep -q '@[a-z]*dir@' "$u" || {
        echo "FAIL $(basename "$u"): unsubstituted @...@"
        bad=1
    }
done
for l in 'User=nstance' 'ProtectSystem=strict' 'StateDirectory=nstance' 'CacheDirectory=nstance-secrets' \
    'ConfigurationDirectory=nstance' 'ExecReload=/bin/kill -HUP \$MAINPID' "ExecStart=$sbindir/nstance-secretsd .*" \
    'ExecStartPre=.*/nstance-secrets -c /etc/nstance/secrets.yaml config check' 'CapabilityBoundingSet=' \
    'PrivateDevices=yes'; do
    need "$srv" "$l"
done
need "$agt" "ExecStart=$sbindir/nstance-secrets-agent run .*"
need "$agt" 'User=root'
nofile=$(sed -n 's/^LimitNOFILE=//p' "$srv")
[ "${nofile:-0}" -gt 1024 ] || {
    echo "FAIL nstance-secretsd.service: LimitNOFILE=$nofile, not above server.max_connections (1024)"
    bad=1
}
exposure() { systemd-analyze security --offline=true "$1" 2>&1 | sed -n 's/.*Overall exposure level for .*: \([0-9.]*\).*/\1/p'; }
xs=$(exposure "$srv")
xa=$(exposure "$agt")
[ -n "$xs" ] && [ -n "$xa" ] || {
    echo "systemd-analyze security --offline=true gave no exposure"
    exit 99
}
echo "exposure: nstance-secretsd $xs, nstance-secrets-agent $xa"
awk -v s="$xs" -v a="$xa" 'BEGIN { exit !(s <= 2.0 && a <= 2.5) }' || {
    echo "FAIL exposure above the goal (server <= 2.0, agent <= 2.5)"
    bad=1
}
exit "$bad"
