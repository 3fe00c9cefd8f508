#!/usr/bin/env bash
# A one-node Ceph cluster with the RADOS gateway (S3) on 127.0.0.1, from Debian's packages (ceph-mon,
# ceph-osd, radosgw, ceph-common, uuid-runtime), for the RGW integration tests and bench/.
#
#   ceph-rgw.sh start DIR        make DIR (must not exist or be empty), start one monitor, one OSD (memstore:
#                                objects live in memory) and one radosgw on free ports, create an S3 user;
#                                print, and write to DIR/env, the lines
#                                  NS_RGW_ENDPOINT=http://127.0.0.1:PORT
#                                  NS_RGW_ACCESS_KEY=...
#                                  NS_RGW_SECRET_KEY=...
#   ceph-rgw.sh rgw DIR NAME     one more radosgw, named NAME, on its own free port against the same cluster
#                                (a test that must stop its gateway without disturbing others); prints
#                                its endpoint; its PID is in DIR/run/client.rgw.NAME.pid
#   ceph-rgw.sh stop-rgw DIR NAME   stop that gateway (by its PID) and wait until it is gone
#   ceph-rgw.sh stop DIR         stop every daemon started in DIR, by the PIDs in DIR/run/*.pid
#
# Exit 99 when a tool is missing, 1 when the cluster does not come up (the daemon logs are in DIR/log/ and
# their tail is printed). Facts this relies on (doc/testing.md): with `auth * required = none` the monitor
# client still negotiates msgr2 modes, so `ms mon client mode = crc` is needed, or radosgw hangs for 300 s on
# "get_initial_auth_request returned -13"; pools of size 1 need `mon allow pool size one`; no mgr is needed
# for RGW. The whole start takes a few seconds; every wait is a poll with a deadline.
set -euo pipefail

die() {
    echo "ceph-rgw.sh: $*" >&2
    exit 1
}

need() {
    local t
    for t in "$@"; do
        command -v "$t" >/dev/null 2>&1 || {
            echo "ceph-rgw.sh: $t not installed (contrib/deps.sh installs ceph-mon ceph-osd radosgw ceph-common uuid-runtime)" >&2
            exit 99
        }
    done
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# show_logs DIR: the end of every daemon log, for a failed start.
show_logs() {
    local f
    for f in "$1"/log/*.log; do
        [ -f "$f" ] || continue
        echo "---- $f ----" >&2
        tail -n 30 "$f" >&2
    done
}

# poll SECONDS CMD...: run CMD every 0.2 s until it succeeds; 1 after SECONDS.
poll() {
    local end=$((SECONDS + $1))
    shift
    while ! "$@" >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$end" ] || return 1
        sleep 0.2
    done
}

ceph_c() {
    timeout 20 ceph -c "$D/ceph.conf" --connect-timeout 10 "$@"
}

osd_up() {
    ceph_c osd dump 2>/dev/null | grep -q '^osd\.0 up'
}

http_up() {
    curl -s -o /dev/null --max-time 2 "$1"
}

# start_rgw NAME PORT: a radosgw with its own keyring, daemonized, PID in run/client.rgw.NAME.pid.
start_rgw() {
    local name=$1 port=$2
    ceph_c auth get-or-create "client.rgw.$name" osd 'allow rwx' mon 'allow rw' -o "$D/rgw.$name.keyring" \
        >/dev/null || {
        show_logs "$D"
        die "ceph auth get-or-create client.rgw.$name failed"
    }
    radosgw -c "$D/ceph.conf" -n "client.rgw.$name" --keyring "$D/rgw.$name.keyring" \
        --rgw-frontends "beast endpoint=127.0.0.1:$port tcp_nodelay=1" --rgw-data "$D/rgw.$name" \
        --pid-file "$D/run/client.rgw.$name.pid" >"$D/log/rgw.$name.out" 2>&1 || {
        show_logs "$D"
        die "radosgw $name did not start"
    }
    if ! poll 60 http_up "http://127.0.0.1:$port/"; then
        show_logs "$D"
        die "radosgw $name does not answer on 127.0.0.1:$port after 60 s"
    fi
}

# stop_pid FILE: TERM the daemon in FILE, wait up to 10 s, then KILL.
stop_pid() {
    local f=$1 pid
    [ -f "$f" ] || return 0
    pid=$(cat "$f")
    [ -n "$pid" ] || return 0
    kill "$pid" 2>/dev/null || {
        rm -f "$f"
        return 0
    }
    for _ in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.2
    done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$f"
}

cmd=${1:-}
D=${2:-}
[ -n "$cmd" ] && [ -n "$D" ] || {
    echo "usage: ceph-rgw.sh start|stop DIR | rgw|stop-rgw DIR NAME" >&2
    exit 2
}

case $cmd in
start)
    need ceph-mon ceph-osd radosgw radosgw-admin ceph monmaptool ceph-authtool uuidgen python3 curl timeout
    mkdir -p "$D"
    D=$(cd "$D" && pwd)
    [ -z "$(ls -A "$D")" ] || die "$D is not empty"
    mkdir -p "$D/run" "$D/log" "$D/mon.a" "$D/osd.0"
    fsid=$(uuidgen)
    monport=$(free_port)
    monport1=$(free_port)
    rgwport=$(free_port)
    cat >"$D/ceph.conf" <<EOF
[global]
fsid = $fsid
mon host = [v2:127.0.0.1:$monport,v1:127.0.0.1:$monport1]
mon initial members = a
auth cluster required = none
auth service required = none
auth client required = none
ms mon client mode = crc
run dir = $D/run
pid file = $D/run/\$name.pid
admin socket = $D/run/\$name.asok
log file = $D/log/\$name.log
keyring = $D/keyring
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon max pg per osd = 1000
mon warn on pool no redundancy = false
mon data = $D/mon.\$id
osd data = $D/osd.\$id
osd objectstore = memstore
memstore device bytes = 2147483648
osd max object name len = 460
osd max object namespace len = 64
err to stderr = false
log to stderr = false

[client]
ms mon client mode = crc
rgw dns name = 127.0.0.1
rgw enable usage log = false
rgw thread pool size = 64
EOF
    ceph-authtool --create-keyring "$D/keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
    ceph-authtool "$D/keyring" --gen-key -n client.admin --cap mon 'allow *' --cap osd 'allow *' \
        --cap mds 'allow *' --cap mgr 'allow *' >/dev/null
    monmaptool --create --fsid "$fsid" --addv a "[v2:127.0.0.1:$monport,v1:127.0.0.1:$monport1]" "$D/monmap" >/dev/null
    ceph-mon -c "$D/ceph.conf" --mkfs -i a --monmap "$D/monmap" --keyring "$D/keyring" ||
        die "ceph-mon --mkfs failed"
    ceph-mon -c "$D/ceph.conf" -i a || {
        show_logs "$D"
        die "ceph-mon did not start"
    }
    poll 60 ceph_c mon stat || {
        show_logs "$D"
        die "the monitor does not answer after 60 s"
    }
    osduuid=$(uuidgen)
    id=$(ceph_c osd create "$osduuid") || die "ceph osd create failed"
    [ "$id" = 0 ] || die "ceph osd create: id $id, expected 0"
    ceph-osd -c "$D/ceph.conf" -i 0 --mkfs --osd-uuid "$osduuid" >"$D/log/osd-mkfs.out" 2>&1 || {
        cat "$D/log/osd-mkfs.out" >&2
        die "ceph-osd --mkfs failed"
    }
    ceph-osd -c "$D/ceph.conf" -i 0 || {
        show_logs "$D"
        die "ceph-osd did not start"
    }
    poll 60 osd_up || {
        show_logs "$D"
        die "osd.0 is not up after 60 s"
    }
    start_rgw main "$rgwport"
    ak=NSRGW$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n' | tr a-f A-F)
    sk=$(head -c 24 /dev/urandom | base64 | tr '/+' '_-')
    radosgw-admin -c "$D/ceph.conf" user create --uid nstance --display-name nstance --access-key "$ak" \
        --secret-key "$sk" >"$D/log/user.json" 2>"$D/log/user.err" || {
        cat "$D/log/user.err" >&2
        die "radosgw-admin user create failed"
    }
    printf 'NS_RGW_ENDPOINT=http://127.0.0.1:%s\nNS_RGW_ACCESS_KEY=%s\nNS_RGW_SECRET_KEY=%s\n' \
        "$rgwport" "$ak" "$sk" >"$D/env"
    chmod 600 "$D/env"
    cat "$D/env"
    ;;
rgw)
    name=${3:?usage: ceph-rgw.sh rgw DIR NAME}
    D=$(cd "$D" && pwd)
    port=$(free_port)
    start_rgw "$name" "$port"
    echo "http://127.0.0.1:$port"
    ;;
stop-rgw)
    name=${3:?usage: ceph-rgw.sh stop-rgw DIR NAME}
    stop_pid "$D/run/client.rgw.$name.pid"
    ;;
stop)
    [ -d "$D/run" ] || exit 0
    for f in "$D"/run/client.rgw.*.pid; do
        stop_pid "$f"
    done
    stop_pid "$D/run/osd.0.pid"
    stop_pid "$D/run/mon.a.pid"
    ;;
*)
    echo "ceph-rgw.sh: unknown command $cmd" >&2
    exit 2
    ;;
esac
