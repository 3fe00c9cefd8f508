#!/usr/bin/env bash
# bench/run-load.sh [BUILD_DIR]: GET /v1/agent/files over mutual TLS 1.3 against nstance-secretsd and
# against nginx serving the same JSON bytes as a static file, at 1, 16 and 64 connections, in one run;
# registrations/s (CA key in SoftHSM); the server's RSS under load and after a soak. Prints a table.
#
# Everything runs on 127.0.0.1 in a temp folder (SoftHSM token, file store, configs, nginx prefix, logs);
# every process started here is stopped by its PID at exit. Environment:
#   RUN_SECONDS=5   seconds per load point        CONNS="1 16 64"   connection counts
#   SOAK_SECONDS=60 length of the soak (16 conns) REGS=50           agents enrolling for registrations/s
#   ROUNDS=3        load points are run ROUNDS times, alternating servers; the median is reported
#   REG_SECONDS=1 REG_ROUNDS=3  bench-reg's measurement time and rounds (the registration breakdown)
# Without a built nstance-secretsd the server rows say so and the client certificate comes from
# `nstance-secrets ca issue` instead of an enrolled agent.
set -euo pipefail
src=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=$(cd "${1:-$src/_build}" && pwd)
RUN_SECONDS=${RUN_SECONDS:-5}
CONNS=${CONNS:-"1 16 64"}
SOAK_SECONDS=${SOAK_SECONDS:-60}
REGS=${REGS:-50}
ROUNDS=${ROUNDS:-3}

if [ -f "$build/Makefile" ]; then
    make -s -C "$build" nstance-secrets nstance-secrets-agent bench-load bench-reg >/dev/null
    make -s -C "$build" nstance-secretsd >/dev/null 2>&1 || true
fi
HAVE_SERVER=0
[ -x "$build/nstance-secretsd" ] && HAVE_SERVER=1
CLI=$build/nstance-secrets
AGENT=$build/nstance-secrets-agent
LOAD=$build/bench-load
NGINX=${NGINX:-/usr/sbin/nginx}
[ -x "$NGINX" ] || { echo "run-load.sh: nginx not found at $NGINX" >&2; exit 1; }

T=$(mktemp -d "${TMPDIR:-/tmp}/run-load.XXXXXX")
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$T"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
# CPU time (user + system) of a process in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# ---- token, store, CA (token P-256 key), secrets ----
MODULE=
for m in /usr/lib/softhsm/libsofthsm2.so /usr/lib/*/softhsm/libsofthsm2.so; do [ -f "$m" ] && MODULE=$m && break; done
[ -n "$MODULE" ] || { echo "run-load.sh: SoftHSM not installed" >&2; exit 1; }
mkdir -p "$T/tokens"
printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n' "$T/tokens" >"$T/softhsm2.conf"
export SOFTHSM2_CONF=$T/softhsm2.conf
softhsm2-util --init-token --free --label bench --pin 1234 --so-pin 12345678 >/dev/null
printf 1234 >"$T/pin" && chmod 600 "$T/pin"
head -c 32 /dev/urandom >"$T/kek" && chmod 600 "$T/kek"
SPORT=$(free_port)
CA_URI="pkcs11:token=bench;object=ca-p256?module-path=$MODULE&pin-source=file:$T/pin"
cat >"$T/config.yaml" <<EOF
cluster_id: bench
shard: s1
storage: {backend: file, path: $T/bucket}
encryption_key: {source: file, path: $T/kek}
cache_dir: $T/cache
ca:
  keys: ["$CA_URI"]
registration_nonce:
  issuer: nstance-bench
EOF
# The server's sections only when it is built (an older build's config parser refuses them).
[ "$HAVE_SERVER" = 1 ] && cat >>"$T/config.yaml" <<EOF
server:
  listen: 127.0.0.1:$SPORT
  names: [localhost, 127.0.0.1]
  # The benchmark renews one identity in a loop and registers many agents from one address: no limits.
  renew_min_interval: 0s
  register_burst: 1000000
  register_per_minute: 1000000
templates:
  bench:
    files:
      - {path: /etc/app/app.pem, secret: app.key, format: pem-bundle, mode: "0600"}
      - {path: /etc/app/app.jwks, secret: app.key, format: jwks, mode: "0644"}
      - {path: /etc/app/ca.crt, ca_bundle: true, mode: "0644"}
groups:
  g1: bench
EOF
cli() { "$CLI" -c "$T/config.yaml" "$@"; }
cli ca init --key "$CA_URI" >/dev/null
cli secret create registration-nonce.key --type ed25519 >/dev/null
cli secret create app.key --type ecdsa-p256 >/dev/null
cli secret rotate app.key >/dev/null
cli ca bundle -o "$T/ca.crt"

# ---- the server, a client identity, the JSON bytes ----
SRV_PID=
if [ "$HAVE_SERVER" = 1 ]; then
    "$build/nstance-secretsd" -c "$T/config.yaml" >"$T/server.log" 2>&1 &
    SRV_PID=$!
    PIDS+=("$SRV_PID")
    for _ in $(seq 1 100); do
        curl -sf --cacert "$T/ca.crt" "https://127.0.0.1:$SPORT/health" >/dev/null 2>&1 && break
        kill -0 "$SRV_PID" 2>/dev/null || { cat "$T/server.log" >&2; echo "run-load.sh: server exited" >&2; exit 1; }
        sleep 0.1
    done
    cli nonce issue --kind agent --sub bench-0 --tenant t1 --group g1 --ttl 10m >"$T/nonce-0"
    "$AGENT" enroll --server "https://127.0.0.1:$SPORT" --ca "$T/ca.crt" --nonce-file "$T/nonce-0" --dir "$T/agent-0" >/dev/null
    CERT=$T/agent-0/identity.crt KEY=$T/agent-0/identity.key
    curl -sf --tlsv1.3 --cacert "$T/ca.crt" --cert "$CERT" --key "$KEY" \
        "https://127.0.0.1:$SPORT/v1/agent/files" -o "$T/files.json"
else
    openssl genpkey -algorithm ed25519 -out "$T/client.key" 2>/dev/null
    openssl pkey -in "$T/client.key" -pubout -out "$T/client.pub"
    cli ca issue --public-key "$T/client.pub" --cn bench-0 --tenant t1 --role agent -o "$T/client.crt"
    CERT=$T/client.crt KEY=$T/client.key
    # The same shape and contents the server would send (doc/protocol.md).
    cli secret export app.key --format pem-bundle -o "$T/f1"
    cli secret export app.key --format jwks -o "$T/f2"
    python3 - "$T" >"$T/files.json" <<'PY'
import base64, hashlib, json, sys
t = sys.argv[1]
spec = [("/etc/app/app.pem", "0600", t + "/f1"), ("/etc/app/app.jwks", "0644", t + "/f2"), ("/etc/app/ca.crt", "0644", t + "/ca.crt")]
files, v = [], hashlib.sha256()
for p, m, f in spec:
    c = open(f, "rb").read()
    h = hashlib.sha256(c).hexdigest()
    files.append({"path": p, "mode": m, "owner": "root", "group": "root", "sha256": h, "content": base64.b64encode(c).decode()})
    for x in (p, m, "root", "root", h):
        v.update(x.encode() + b"\0")
print(json.dumps({"files": files, "version": v.hexdigest()}, separators=(",", ":")))
PY
fi

# ---- nginx: TLS 1.3 only, client certificates required, the JSON as a static file ----
NPORT=$(free_port)
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$T/nginx.key" 2>/dev/null
openssl pkey -in "$T/nginx.key" -pubout -out "$T/nginx.pub"
cli ca issue --public-key "$T/nginx.pub" --cn localhost --tenant t1 --kind server --dns localhost --ip 127.0.0.1 \
    -o "$T/nginx.crt"
mkdir -p "$T/nginx/tmp"
cp "$T/files.json" "$T/nginx/files.json"
cat >"$T/nginx/nginx.conf" <<EOF
user root;
worker_processes auto;
pid $T/nginx/nginx.pid;
error_log $T/nginx/error.log warn;
events { worker_connections 2048; }
http {
    access_log $T/nginx/access.log;
    client_body_temp_path $T/nginx/tmp/body;
    proxy_temp_path $T/nginx/tmp/proxy;
    fastcgi_temp_path $T/nginx/tmp/fastcgi;
    uwsgi_temp_path $T/nginx/tmp/uwsgi;
    scgi_temp_path $T/nginx/tmp/scgi;
    keepalive_requests 100000000;
    keepalive_timeout 60s;
    server {
        listen 127.0.0.1:$NPORT ssl;
        server_name localhost;
        ssl_protocols TLSv1.3;
        ssl_certificate $T/nginx.crt;
        ssl_certificate_key $T/nginx.key;
        ssl_client_certificate $T/ca.crt;
        ssl_verify_client on;
        location = /v1/agent/files {
            default_type application/json;
            alias $T/nginx/files.json;
        }
    }
}
EOF
"$NGINX" -p "$T/nginx" -e "$T/nginx/error.log" -c "$T/nginx/nginx.conf" -g 'daemon off;' &
NGINX_PID=$!
PIDS+=("$NGINX_PID")
for _ in $(seq 1 50); do
    curl -sf --tlsv1.3 --cacert "$T/ca.crt" --cert "$CERT" --key "$KEY" "https://localhost:$NPORT/v1/agent/files" \
        --resolve "localhost:$NPORT:127.0.0.1" -o "$T/nginx-check.json" && break
    sleep 0.1
done
cmp -s "$T/files.json" "$T/nginx-check.json" || { cat "$T/nginx/error.log" >&2; echo "run-load.sh: nginx does not serve the JSON" >&2; exit 1; }

# load PORT LABEL CONNS SECONDS: one bench-load line
load() {
    "$LOAD" --port "$1" --label "$2" --conns "$3" --seconds "$4" --ca "$T/ca.crt" --cert "$CERT" --key "$KEY" \
        --name localhost || true
}
field() { awk -v k="$1=" '{for (i = 1; i <= NF; i++) if (index($i, k) == 1) print substr($i, length(k) + 1)}'; }
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

echo "# run-load.sh on $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# body: $(wc -c <"$T/files.json") bytes; $ROUNDS rounds of ${RUN_SECONDS}s per point, medians"
[ "$HAVE_SERVER" = 1 ] || echo "# nstance-secretsd is not built: server rows are missing"
printf '%-8s %12s %9s %9s %11s %12s %9s %9s %10s\n' conns "ours req/s" "p50 ms" "p99 ms" "cpu ms/req" "nginx req/s" "p50 ms" "p99 ms" ours/nginx
[ -n "$SRV_PID" ] && RSS0=$(rss_kb "$SRV_PID")
for c in $CONNS; do
    : >"$T/ours.txt"
    : >"$T/ngx.txt"
    for _ in $(seq 1 "$ROUNDS"); do
        if [ -n "$SRV_PID" ]; then
            c0=$(cpu_ticks "$SRV_PID")
            line=$(load "$SPORT" ours "$c" "$RUN_SECONDS")
            c1=$(cpu_ticks "$SRV_PID")
            reqs=$(echo "$line" | field requests)
            echo "$line cpu_ms_per_req=$(awk -v a="$c0" -v b="$c1" -v n="${reqs:-0}" -v hz="$(getconf CLK_TCK)" \
                'BEGIN {printf "%.3f", (n > 0 ? (b - a) * 1000 / hz / n : 0)}')" >>"$T/ours.txt"
        fi
        load "$NPORT" nginx "$c" "$RUN_SECONDS" >>"$T/ngx.txt"
    done
    nr=$(field 'req/s' <"$T/ngx.txt" | median)
    np50=$(field p50_ms <"$T/ngx.txt" | median)
    np99=$(field p99_ms <"$T/ngx.txt" | median)
    if [ -n "$SRV_PID" ] && [ -s "$T/ours.txt" ]; then
        or=$(field 'req/s' <"$T/ours.txt" | median)
        op50=$(field p50_ms <"$T/ours.txt" | median)
        op99=$(field p99_ms <"$T/ours.txt" | median)
        ocpu=$(field cpu_ms_per_req <"$T/ours.txt" | median)
        ratio=$(awk -v a="$or" -v b="$nr" 'BEGIN {printf "%.2f", (b > 0 ? a / b : 0)}')
        grep -h 'errors=[1-9]' "$T/ours.txt" >&2 || true
    else
        or=- op50=- op99=- ocpu=- ratio=-
    fi
    printf '%-8s %12s %9s %9s %11s %12s %9s %9s %10s\n' "$c" "$or" "$op50" "$op99" "$ocpu" "$nr" "$np50" "$np99" "$ratio"
done

if [ -n "$SRV_PID" ]; then
    RSS1=$(rss_kb "$SRV_PID")
    load "$SPORT" soak 16 "$SOAK_SECONDS" >"$T/soak.txt"
    RSS2=$(rss_kb "$SRV_PID")
    load "$SPORT" soak2 16 "$SOAK_SECONDS" >"$T/soak2.txt"
    RSS3=$(rss_kb "$SRV_PID")
    echo "# server RSS (KiB): at start $RSS0, after the load table $RSS1, after a ${SOAK_SECONDS}s soak at 16 conns $RSS2, after a second soak $RSS3"
    echo "# soak: $(cat "$T/soak.txt")"
    echo "# soak2: $(cat "$T/soak2.txt")"

    # Registrations/s: REGS agents with a nonce each, 8 enrolling at a time (agent process start included).
    for i in $(seq 1 "$REGS"); do
        cli nonce issue --kind agent --sub "reg-$i" --tenant t1 --group g1 --ttl 10m >"$T/nonce-r$i"
    done
    t0=$(date +%s.%N)
    seq 1 "$REGS" | xargs -P 8 -I{} "$AGENT" enroll --server "https://127.0.0.1:$SPORT" --ca "$T/ca.crt" \
        --nonce-file "$T/nonce-r{}" --dir "$T/reg-{}" >/dev/null
    t1=$(date +%s.%N)
    ok=$(ls "$T"/reg-*/identity.crt 2>/dev/null | wc -l)
    echo "# registrations: $ok of $REGS in $(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.2f", b - a}') s = $(awk -v a="$t0" -v b="$t1" -v n="$ok" 'BEGIN {printf "%.0f", n / (b - a)}')/s (8 agents at a time, CA key P-256 in SoftHSM)"
    if curl -sf --cacert "$T/ca.crt" "https://127.0.0.1:$SPORT/metrics" -o "$T/metrics.txt"; then
        echo "# server metrics (register):"
        grep -E '^nstance_request_duration_seconds_(sum|count)\{.*register' "$T/metrics.txt" | sed 's/^/#   /' || true
        grep -E '^nstance_token_operations_total' "$T/metrics.txt" | sed 's/^/#   /' || true
    fi
fi
# The pieces of a registration, measured with the library (bench/bench-reg.c), on the same machine.
if [ -x "$build/bench-reg" ]; then
    TMPDIR=$T "$build/bench-reg" -d "${REG_SECONDS:-1}" -r "${REG_ROUNDS:-3}" | sed 's/^/# /'
fi
