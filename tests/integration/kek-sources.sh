#!/usr/bin/env bash
# Covers: the external key sources (vault, aws-secrets-manager, aws-parameter-store, google-secret-manager,
# azure-key-vault) through the real CLI, against tests/tools/kek-source-server.py on 127.0.0.1.
#
# In detail: each source as encryption_key (put/get round trip, `kek list` names the source) and as one of
# old_encryption_keys (a mixed ring reads every blob, verify counts per id); every way to authenticate
# (Vault token variable, token file, AppRole login and revoke; AWS SigV4 checked by botocore; Google metadata
# server and a service-account key whose RS256 JWT the server verifies; Azure managed identity and client
# credentials); value encodings (hex, base64, raw through SecretBinary/payload.data) give one id; errors
# with exact exit codes and messages: 401/403 (4), 404 and missing field/token (3), malformed values,
# bad base64, non-JSON answers, a non-SecureString parameter (8), 500 then success (retried: exit 0), 500
# for good, an unreachable port and a timeout (5, after the configured retries), plain http to another host
# (2); https with a private CA (ca_file) and without it (5); ns_keyring_reload on SIGHUP through
# tests/tools/ns-reload (a changed value is picked up, a broken source keeps the old ring). No key value,
# token or client secret ever appears in any output.
. "${top_srcdir:-$(cd "$(dirname "$0")/../.." && pwd)}/tests/integration/lib.sh"
ns_setup

python3 -c 'import botocore, cryptography' 2>/dev/null || {
    echo "python3-botocore and python3-cryptography are needed"
    exit 99
}
ns_need openssl
SERVER=$top_srcdir/tests/tools/kek-source-server.py
BUCKET=$T/bucket
SRV=$T/srv
mkdir -p "$SRV" "$T/plain" "$T/cred"

# No credentials of the machine may leak into the test, and none of ours out of it.
unset VAULT_TOKEN AWS_PROFILE AWS_SESSION_TOKEN AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY
export AWS_SHARED_CREDENTIALS_FILE=$T/no-aws-credentials AWS_CONFIG_FILE=$T/no-aws-config
export AWS_EC2_METADATA_DISABLED=true HOME=$T

hexof() { od -An -v -tx1 "$1" | tr -d ' \n'; }
b64of() { base64 -w0 "$1"; }
# A fresh random key: NAME.raw in $T/keys, and NAME_HEX / NAME_B64 set.
mkdir -p "$T/keys"
newkey() {
    head -c 32 /dev/urandom >"$T/keys/$1.raw"
    printf -v "$1_HEX" '%s' "$(hexof "$T/keys/$1.raw")"
    printf -v "$1_B64" '%s' "$(b64of "$T/keys/$1.raw")"
}
# secretfile NAME VALUE: a credential file (0600, trailing newline) in $T/cred.
secretfile() {
    (
        umask 077
        printf '%s\n' "$2" >"$T/cred/$1"
    )
}

# Every secret the test hands out; checked against every output.
SECRETS=()
no_leak() {
    local s f
    for f in "$T/out" "$T/err"; do
        for s in "${SECRETS[@]}"; do
            if grep -qF -- "$s" "$f"; then
                fail "a secret value appears in $(basename "$f") of the last command"
            fi
        done
    done
}
# run N ARGS...: expect_rc, then check that nothing secret was printed.
run() {
    expect_rc "$@"
    no_leak
}

# ---- the server ----

# start_server DIR [--tls-cert C --tls-key K]: sets PORT.
start_server() {
    local dir=$1 i
    shift
    mkdir -p "$dir"
    rm -f "$dir/port"
    python3 "$SERVER" --state "$dir" "$@" 2>"$dir/server.err" &
    ns_bg_pid $!
    for i in $(seq 100); do
        [ -s "$dir/port" ] && break
        sleep 0.1
    done
    [ -s "$dir/port" ] || {
        cat "$dir/server.err" >&2
        fail "kek-source-server did not start"
    }
    PORT=$(cat "$dir/port")
}

newkey KV
newkey KA
newkey KS
newkey KG
newkey KZ
VAULT_TOK=hvs.test-token-$RANDOM$RANDOM
APPROLE_TOK=hvs.approle-token-$RANDOM$RANDOM
ROLE_ID=role-$RANDOM
SECRET_ID=secret-id-$RANDOM$RANDOM
AWS_AK=AKIATESTKEY$RANDOM$RANDOM
AWS_SK=aws-secret-$RANDOM$RANDOM$RANDOM
GCP_META_TOK=ya29.metadata-$RANDOM$RANDOM
GCP_SA_TOK=ya29.sa-$RANDOM$RANDOM
AZ_IMDS_TOK=eyJ.imds-$RANDOM$RANDOM
AZ_CC_TOK=eyJ.cc-$RANDOM$RANDOM
AZ_CLIENT_SECRET=client-secret-$RANDOM$RANDOM
SECRETS=("$KV_HEX" "$KV_B64" "$KA_HEX" "$KA_B64" "$KS_HEX" "$KS_B64" "$KG_HEX" "$KG_B64" "$KZ_HEX" "$KZ_B64"
    "$VAULT_TOK" "$APPROLE_TOK" "$SECRET_ID" "$AWS_SK" "$GCP_META_TOK" "$GCP_SA_TOK" "$AZ_IMDS_TOK" "$AZ_CC_TOK"
    "$AZ_CLIENT_SECRET")

secretfile vault-token "$VAULT_TOK"
secretfile secret-id "$SECRET_ID"
secretfile az-secret "$AZ_CLIENT_SECRET"

start_server "$SRV"
BASE=http://127.0.0.1:$PORT
python3 "$SERVER" gen-gcp-key "$T/cred/sa.json" "$BASE/token"

# What the server holds; srv_write writes it (atomically: the server reads it at every request).
VAULT_SECRETS="\"secret/nstance/kek\": {\"kek\": \"$KV_HEX\", \"other\": 1}, \"kv/team/b64\": {\"k\": \"$KV_B64\"}"
VAULT_NS=null
AWS_SM="\"nstance/kek\": {\"SecretString\": \"$KA_HEX\"}, \"bin\": {\"SecretBinary\": \"$KA_B64\"}"
AWS_STAGE="{}"
AWS_SSM="\"/nstance/kek\": {\"Type\": \"SecureString\", \"Value\": \"$KS_B64\"}"
GCP_SECRETS="\"projects/p1/secrets/kek/versions/latest\": \"$(printf '%s' "$KG_HEX" | base64 -w0)\",
  \"projects/p1/secrets/kek/versions/2\": \"$KG_B64\""
AZ_SECRETS="\"kek\": \"$KZ_B64\", \"kek/0a1b\": \"$KZ_HEX\""
FAULTS="[]"
srv_write() {
    cat >"$SRV/config.json.tmp" <<EOF
{"vault": {"token": "$VAULT_TOK", "namespace": $VAULT_NS, "secrets": {$VAULT_SECRETS},
           "approle": {"mount": "approle", "role_id": "$ROLE_ID", "secret_id": "$SECRET_ID", "token": "$APPROLE_TOK"}},
 "aws": {"access_key": "$AWS_AK", "secret_key": "$AWS_SK", "region": "eu-west-1",
         "sm": {$AWS_SM}, "sm_stage": $AWS_STAGE, "ssm": {$AWS_SSM}},
 "gcp": {"metadata_token": "$GCP_META_TOK", "sa_key_file": "$T/cred/sa.json", "sa_token": "$GCP_SA_TOK",
         "secrets": {$GCP_SECRETS}},
 "azure": {"imds_token": "$AZ_IMDS_TOK", "tenant": "tenant-1", "client_id": "client-1",
           "client_secret": "$AZ_CLIENT_SECRET", "cc_token": "$AZ_CC_TOK", "secrets": {$AZ_SECRETS}},
 "faults": $FAULTS}
EOF
    mv "$SRV/config.json.tmp" "$SRV/config.json"
    : >"$SRV/requests.log"
}
srv_write
# requests N LINE: the server got LINE ("METHOD PATH STATUS") exactly N times since the last srv_write.
requests() {
    local got
    got=$(grep -cxF -- "$2" "$SRV/requests.log" || true)
    if [ "$got" != "$1" ]; then
        cat "$SRV/requests.log" >&2
        fail "expected $1 x '$2' at the server, got $got"
    fi
}

# Each source's KEK entry as a YAML flow mapping.
E_VAULT="{source: vault, address: '$BASE', path: nstance/kek, field: kek}"
E_AWS_SM="{source: aws-secrets-manager, secret_id: nstance/kek, region: eu-west-1, endpoint: '$BASE'}"
E_AWS_SSM="{source: aws-parameter-store, name: /nstance/kek, region: eu-west-1, endpoint: '$BASE/'}"
E_GCP="{source: google-secret-manager, project: p1, secret: kek, endpoint: '$BASE', metadata_endpoint: '$BASE'}"
E_AZURE="{source: azure-key-vault, vault_url: '$BASE', name: kek, metadata_endpoint: '$BASE'}"
config() {
    ns_ring_config "$T/config.yaml" kek-sources "$BUCKET" "$@"
}
# primary_id: PRIMARY_ID from `kek list`, which must succeed and name the source SRCDESC.
primary_id() {
    run 0 kek list
    PRIMARY_ID=$(awk '$1 == "primary" && $4 == "reachable" { print $2 }' "$T/out")
    [ "${#PRIMARY_ID}" = 32 ] || {
        cat "$T/out" "$T/err" >&2
        fail "kek list: no reachable primary"
    }
    assert_contains "$T/out" "$1" "kek list names the source"
}
roundtrip() {
    head -c $((RANDOM % 2000 + 1)) /dev/urandom >"$T/plain/$1"
    run 0 put "$1" "$T/plain/$1"
    run 0 get "$1"
    cmp -s "$T/out" "$T/plain/$1" || fail "get $1: content differs"
}
check() {
    run 0 get "$1"
    cmp -s "$T/out" "$T/plain/$1" || fail "get $1: content differs"
}
# fails RC MESSAGE ARGS...: the command exits RC and stderr has MESSAGE.
fails() {
    local rc=$1 msg=$2
    shift 2
    run "$rc" "$@"
    assert_contains "$T/err" "$msg" "nstance-secrets $*: message"
}

# ==== vault ====
echo "# vault"
export VAULT_TOKEN=$VAULT_TOK
config "$E_VAULT"
primary_id "vault $BASE secret/nstance/kek#kek"
ID_V=$PRIMARY_ID
roundtrip vault-1
requests 3 "GET /v1/secret/data/nstance/kek 200" # kek list, put, get: fetched once per run
# the same key, base64, another mount and field, token from a file, a namespace: same id
VAULT_NS='"team-ns"'
srv_write
unset VAULT_TOKEN
config "{source: vault, address: '$BASE/', mount: kv, path: team/b64, field: k, token_file: $T/cred/vault-token, namespace: team-ns}"
primary_id "vault $BASE kv/team/b64#k"
assert_eq "$PRIMARY_ID" "$ID_V" "vault: base64 of the same key, same id"
check vault-1
chmod 0640 "$T/cred/vault-token"
fails 4 "vault token file $T/cred/vault-token is accessible by group or others" get vault-1
chmod 0600 "$T/cred/vault-token"
VAULT_NS=null
srv_write
# AppRole: login, read, revoke
config "{source: vault, address: '$BASE', path: nstance/kek, field: kek, approle: {role_id: $ROLE_ID, secret_id_file: $T/cred/secret-id}}"
check vault-1
requests 1 "POST /v1/auth/approle/login 200"
requests 1 "GET /v1/secret/data/nstance/kek 200"
requests 1 "POST /v1/auth/token/revoke-self 204"
secretfile wrong-secret-id "wrong-$SECRET_ID"
SECRETS+=("wrong-$SECRET_ID")
config "{source: vault, address: '$BASE', path: nstance/kek, field: kek, approle: {role_id: $ROLE_ID, secret_id_file: $T/cred/wrong-secret-id}}"
fails 4 "vault $BASE secret/nstance/kek#kek: AppRole login: HTTP 400" get vault-1
# errors
export VAULT_TOKEN=$VAULT_TOK
config "{source: vault, address: '$BASE', path: nstance/none, field: kek}"
fails 3 "vault $BASE secret/nstance/none#kek: reading the secret: HTTP 404" get vault-1
config "{source: vault, address: '$BASE', path: nstance/kek, field: missing}"
fails 3 "vault $BASE secret/nstance/kek#missing: the secret has no field 'missing'" get vault-1
config "{source: vault, address: '$BASE', path: nstance/kek, field: other}"
fails 8 "field 'other' is not a string" get vault-1
config "$E_VAULT"
VAULT_TOKEN=wrong-token
fails 4 "vault $BASE secret/nstance/kek#kek: reading the secret: HTTP 403" get vault-1
assert_contains "$T/err" "primary encryption key could not be loaded: the key source refused access" "exit 4 reason"
unset VAULT_TOKEN
fails 3 "environment variable VAULT_TOKEN (the token) is not set" get vault-1
export VAULT_TOKEN=$VAULT_TOK
# malformed values: one digit too many, bad base64 of the right length, raw bytes of the wrong length
VAULT_SECRETS="\"secret/nstance/kek\": {\"kek\": \"${KV_HEX}0\"}, \"kv/team/b64\": {\"k\": \"!${KV_B64:1}\"}, \"x/y\": {\"k\": \"short\"}"
srv_write
fails 8 "vault $BASE secret/nstance/kek#kek: the value is not 32 raw bytes, 64 hex digits or 44 base64 characters (65 bytes)" get vault-1
config "{source: vault, address: '$BASE', mount: kv, path: team/b64, field: k}"
fails 8 "(44 bytes)" get vault-1
config "{source: vault, address: '$BASE', mount: x, path: y, field: k}"
fails 8 "(5 bytes)" get vault-1
# 500 twice, then the answer: retried, success
VAULT_SECRETS="\"secret/nstance/kek\": {\"kek\": \"$KV_HEX\"}"
FAULTS='[{"match": "/v1/secret/data/", "status": 500, "count": 2}]'
srv_write
config "$E_VAULT"
check vault-1
requests 2 "GET /v1/secret/data/nstance/kek 500"
requests 1 "GET /v1/secret/data/nstance/kek 200"
# 500 for good: the configured retries, then exit 5 naming the source
FAULTS='[{"match": "/v1/secret/data/", "status": 500, "count": -1}]'
srv_write
config "{source: vault, address: '$BASE', path: nstance/kek, field: kek, retries: 2}"
fails 5 "vault $BASE secret/nstance/kek#kek: reading the secret: HTTP 500" get vault-1
requests 3 "GET /v1/secret/data/nstance/kek 500"
assert_contains "$T/err" "key source unreachable or failed" "exit 5 reason"
# a 200 that is not JSON
FAULTS='[{"match": "/v1/secret/data/", "status": 200, "body": "<html>", "count": -1}]'
srv_write
fails 8 "reading the secret: the answer is not a JSON object" get vault-1
# a timeout: 2 s of silence against a 1 s timeout, one retry
FAULTS='[{"match": "/v1/secret/data/", "sleep": 2, "count": -1}]'
srv_write
config "{source: vault, address: '$BASE', path: nstance/kek, field: kek, timeout: 1, retries: 1}"
fails 5 "vault $BASE secret/nstance/kek#kek: reading the secret: no answer" get vault-1
FAULTS="[]"
srv_write
# nothing listening
config "{source: vault, address: 'http://127.0.0.1:1', path: nstance/kek, field: kek, retries: 1}"
fails 5 "vault http://127.0.0.1:1 secret/nstance/kek#kek: reading the secret: no answer" get vault-1
# plain http to anything but loopback or the metadata address is refused by the config
config "{source: vault, address: 'http://vault.example.com:8200', path: nstance/kek, field: kek}"
fails 2 "encryption_key.address: must be an https:// URL" get vault-1

# ==== aws-secrets-manager ====
echo "# aws-secrets-manager"
export AWS_ACCESS_KEY_ID=$AWS_AK AWS_SECRET_ACCESS_KEY=$AWS_SK
config "$E_AWS_SM"
primary_id "aws-secrets-manager $BASE nstance/kek"
ID_A=$PRIMARY_ID
roundtrip aws-sm-1
grep -q "^ok secretsmanager " "$SRV/sigv4.log" || fail "no SigV4 signature verified for secretsmanager"
# SecretBinary: base64 of the raw key; a version stage
AWS_STAGE='{"bin": "AWSPREVIOUS"}'
srv_write
config "{source: aws-secrets-manager, secret_id: bin, version_stage: AWSPREVIOUS, region: eu-west-1, endpoint: '$BASE'}"
primary_id "aws-secrets-manager $BASE bin @AWSPREVIOUS"
assert_eq "$PRIMARY_ID" "$ID_A" "SecretBinary: same key, same id"
check aws-sm-1
config "{source: aws-secrets-manager, secret_id: nope, region: eu-west-1, endpoint: '$BASE'}"
fails 3 "aws-secrets-manager $BASE nope: secretsmanager.GetSecretValue: HTTP 400 ResourceNotFoundException" get aws-sm-1
config "$E_AWS_SM"
AWS_SECRET_ACCESS_KEY=wrong-$AWS_SK
fails 4 "secretsmanager.GetSecretValue: HTTP 400 InvalidSignatureException" get aws-sm-1
AWS_SECRET_ACCESS_KEY=$AWS_SK AWS_ACCESS_KEY_ID=AKIAOTHERKEY0000
fails 4 "HTTP 400 UnrecognizedClientException" get aws-sm-1
unset AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY
fails 3 "aws-secrets-manager $BASE nstance/kek: no AWS credentials" get aws-sm-1
export AWS_ACCESS_KEY_ID=$AWS_AK AWS_SECRET_ACCESS_KEY=$AWS_SK
AWS_SM="\"nstance/kek\": {\"SecretBinary\": \"${KA_B64:0:40}*==\"}"
srv_write
fails 8 "the value is not valid base64 as the API sends it" get aws-sm-1
AWS_SM="\"nstance/kek\": {\"SecretBinary\": \"$KA_HEX\"}"
srv_write
fails 8 "the value is not 32 raw bytes, 64 hex digits or 44 base64 characters (48 bytes)" get aws-sm-1
AWS_SM="\"nstance/kek\": {\"Name\": \"x\"}"
srv_write
fails 8 "the answer has neither SecretString nor SecretBinary" get aws-sm-1
AWS_SM="\"nstance/kek\": {\"SecretString\": \"$KA_HEX\"}"
srv_write

# ==== aws-parameter-store ====
echo "# aws-parameter-store"
config "$E_AWS_SSM"
primary_id "aws-parameter-store $BASE/ /nstance/kek"
ID_S=$PRIMARY_ID
roundtrip aws-ssm-1
grep -q "^ok ssm " "$SRV/sigv4.log" || fail "no SigV4 signature verified for ssm"
config "{source: aws-parameter-store, name: /nstance/none, region: eu-west-1, endpoint: '$BASE'}"
fails 3 "AmazonSSM.GetParameter: HTTP 400 ParameterNotFound" get aws-ssm-1
AWS_SSM="\"/nstance/kek\": {\"Type\": \"String\", \"Value\": \"$KS_B64\"}"
srv_write
config "$E_AWS_SSM"
fails 8 "aws-parameter-store $BASE/ /nstance/kek: the parameter is not a SecureString" get aws-ssm-1
AWS_SSM="\"/nstance/kek\": {\"Type\": \"SecureString\", \"Value\": \"$KS_B64\"}"
srv_write

# ==== google-secret-manager ====
echo "# google-secret-manager"
config "$E_GCP"
primary_id "google-secret-manager $BASE projects/p1/secrets/kek/versions/latest"
ID_G=$PRIMARY_ID
roundtrip gcp-1
requests 3 "GET /computeMetadata/v1/instance/service-accounts/default/token 200"
# a service-account key: RS256 JWT bearer grant; payload.data is the raw key this time (version 2)
config "{source: google-secret-manager, project: p1, secret: kek, version: '2', endpoint: '$BASE', credentials_file: $T/cred/sa.json}"
primary_id "google-secret-manager $BASE projects/p1/secrets/kek/versions/2"
assert_eq "$PRIMARY_ID" "$ID_G" "google: raw and hex of the same key, same id"
check gcp-1
grep -q "^ok kid=" "$SRV/jwt.log" || fail "no JWT assertion verified"
requests 2 "POST /token 200"
# the server knows another key: the grant is refused
python3 "$SERVER" gen-gcp-key "$T/cred/other.json" "$BASE/token"
cp "$T/cred/other.json" "$T/cred/sa-wrong.json"
python3 - "$T/cred/sa-wrong.json" "$T/cred/sa.json" <<'EOF'
import json, sys
wrong, right = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
wrong["private_key_id"], wrong["client_email"] = right["private_key_id"], right["client_email"]
json.dump(wrong, open(sys.argv[1], "w"))
EOF
chmod 0600 "$T/cred/sa-wrong.json"
config "{source: google-secret-manager, project: p1, secret: kek, endpoint: '$BASE', credentials_file: $T/cred/sa-wrong.json}"
fails 4 "service-account token: HTTP 400 invalid_grant" get gcp-1
# a key file that sends the token elsewhere over plain http is refused
sed "s#$BASE/token#http://token.example.com/token#" "$T/cred/sa.json" >"$T/cred/sa-elsewhere.json"
chmod 0600 "$T/cred/sa-elsewhere.json"
config "{source: google-secret-manager, project: p1, secret: kek, endpoint: '$BASE', credentials_file: $T/cred/sa-elsewhere.json}"
fails 8 "the token_uri of $T/cred/sa-elsewhere.json is missing or not an allowed URL" get gcp-1
chmod 0644 "$T/cred/sa-elsewhere.json"
fails 4 "is accessible by group or others" get gcp-1
config "{source: google-secret-manager, project: p1, secret: none, endpoint: '$BASE', metadata_endpoint: '$BASE'}"
fails 3 "google-secret-manager $BASE projects/p1/secrets/none/versions/latest: accessing the secret version: HTTP 404 NOT_FOUND" get gcp-1
FAULTS='[{"match": "/v1/projects/", "status": 403, "body": "{\"error\": {\"code\": 403, \"status\": \"PERMISSION_DENIED\"}}", "count": -1}]'
srv_write
config "$E_GCP"
fails 4 "accessing the secret version: HTTP 403 PERMISSION_DENIED" get gcp-1
FAULTS='[{"match": "/computeMetadata/", "status": 200, "body": "{\"access_token\": \"t\"}", "count": -1}]'
srv_write
fails 8 "metadata server token: the answer lacks Metadata-Flavor: Google" get gcp-1
FAULTS="[]"
GCP_SECRETS="\"projects/p1/secrets/kek/versions/latest\": \"$(printf '%s' "${KG_HEX:0:40}" | base64 -w0)\""
srv_write
fails 8 "the value is not 32 raw bytes, 64 hex digits or 44 base64 characters (40 bytes)" get gcp-1
GCP_SECRETS="\"projects/p1/secrets/kek/versions/latest\": \"$(printf '%s' "$KG_HEX" | base64 -w0)\""
srv_write

# ==== azure-key-vault ====
echo "# azure-key-vault"
config "$E_AZURE"
primary_id "azure-key-vault $BASE/secrets/kek"
ID_Z=$PRIMARY_ID
roundtrip azure-1
requests 3 "GET /metadata/identity/oauth2/token 200"
config "{source: azure-key-vault, vault_url: '$BASE/', name: kek, version: 0a1b, tenant_id: tenant-1, client_id: client-1, client_secret_file: $T/cred/az-secret, authority: '$BASE'}"
primary_id "azure-key-vault $BASE/secrets/kek/0a1b"
assert_eq "$PRIMARY_ID" "$ID_Z" "azure: hex and base64 of the same key, same id"
check azure-1
requests 2 "POST /tenant-1/oauth2/v2.0/token 200"
secretfile az-wrong "wrong-$AZ_CLIENT_SECRET"
SECRETS+=("wrong-$AZ_CLIENT_SECRET")
config "{source: azure-key-vault, vault_url: '$BASE', name: kek, tenant_id: tenant-1, client_id: client-1, client_secret_file: $T/cred/az-wrong, authority: '$BASE'}"
fails 4 "azure-key-vault $BASE/secrets/kek: client credentials token: HTTP 401 invalid_client" get azure-1
config "{source: azure-key-vault, vault_url: '$BASE', name: nokey, metadata_endpoint: '$BASE'}"
fails 3 "azure-key-vault $BASE/secrets/nokey: reading the secret: HTTP 404 SecretNotFound" get azure-1
FAULTS='[{"match": "/secrets/", "status": 403, "body": "{\"error\": {\"code\": \"Forbidden\"}}", "count": -1}]'
srv_write
config "$E_AZURE"
fails 4 "reading the secret: HTTP 403 Forbidden" get azure-1
FAULTS='[{"match": "/metadata/identity/", "status": 200, "body": "{\"token_type\": \"Bearer\"}", "count": -1}]'
srv_write
fails 8 "managed identity token: the answer has no bearer access_token" get azure-1
FAULTS="[]"
AZ_SECRETS="\"kek\": \"$KZ_B64=\""
srv_write
fails 8 "(45 bytes)" get azure-1
AZ_SECRETS="\"kek\": \"$KZ_B64\", \"kek/0a1b\": \"$KZ_HEX\""
srv_write

# ==== a mixed ring: one source primary, the others old keys ====
echo "# mixed ring"
export VAULT_TOKEN=$VAULT_TOK
chmod 0600 "$T/keys/"*.raw
config "$E_VAULT" "$E_AWS_SM" "$E_AWS_SSM" "$E_GCP" "$E_AZURE" "{source: file, path: $T/keys/KV.raw}"
run 2 kek list
assert_contains "$T/err" "the same key (id $ID_V) is configured twice" "the same key from vault and a file"
config "$E_VAULT" "$E_AWS_SM" "$E_AWS_SSM" "$E_GCP" "$E_AZURE"
run 0 kek list
for id in "$ID_V" "$ID_A" "$ID_S" "$ID_G" "$ID_Z"; do
    assert_contains "$T/out" "$id" "kek list shows every source's key"
done
for n in vault-1 aws-sm-1 aws-ssm-1 gcp-1 azure-1; do
    check "$n"
done
run 0 verify
assert_contains "$T/out" "kek $ID_V (primary): 1" "verify: vault"
assert_contains "$T/out" "kek $ID_A (old): 1" "verify: aws-secrets-manager"
assert_contains "$T/out" "kek $ID_S (old): 1" "verify: aws-parameter-store"
assert_contains "$T/out" "kek $ID_G (old): 1" "verify: google-secret-manager"
assert_contains "$T/out" "kek $ID_Z (old): 1" "verify: azure-key-vault"
# azure as primary and vault as an old key
config "$E_AZURE" "$E_VAULT"
roundtrip azure-2
check vault-1
# an old source that cannot be reached: kek list says which (and exits 5), put/get refuse (strict)
config "$E_AZURE" "{source: vault, address: 'http://127.0.0.1:1', path: nstance/kek, field: kek, retries: 0}"
run 5 kek list
assert_contains "$T/out" "unreachable vault http://127.0.0.1:1 secret/nstance/kek#kek" "kek list: unreachable source"
assert_contains "$T/out" "error: key source unreachable or failed" "kek list: the reason"
run 5 get azure-2

# ==== every source retries 500s, and gives up on silence ====
echo "# retries"
retry_case() { # ENTRY MATCH BLOB REQUEST-LINE-PREFIX
    FAULTS="[{\"match\": \"$2\", \"status\": 500, \"count\": 2}]"
    srv_write
    config "$1"
    check "$3"
    requests 2 "$4 500"
    requests 1 "$4 200"
}
retry_case "$E_AWS_SM" / aws-sm-1 "POST /"
retry_case "$E_AWS_SSM" / aws-ssm-1 "POST /"
retry_case "$E_GCP" /v1/projects/ gcp-1 "GET /v1/projects/p1/secrets/kek/versions/latest:access"
retry_case "$E_AZURE" /secrets/ azure-1 "GET /secrets/kek"
FAULTS='[{"match": "/", "sleep": 2, "count": -1}]'
srv_write
config "{source: aws-secrets-manager, secret_id: nstance/kek, region: eu-west-1, endpoint: '$BASE', timeout: 1, retries: 1}"
fails 5 "aws-secrets-manager $BASE nstance/kek: secretsmanager.GetSecretValue: no answer" get aws-sm-1
FAULTS="[]"
srv_write

# ==== https with a private CA ====
echo "# https"
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$T/ca.key" -out "$T/ca.pem" -days 2 -subj "/CN=kek test CA" \
    >/dev/null 2>&1 || fail "openssl: CA"
openssl req -newkey rsa:2048 -nodes -keyout "$T/tls.key" -out "$T/tls.csr" -subj "/CN=127.0.0.1" >/dev/null 2>&1 ||
    fail "openssl: CSR"
printf 'subjectAltName=IP:127.0.0.1\n' >"$T/san.ext"
openssl x509 -req -in "$T/tls.csr" -CA "$T/ca.pem" -CAkey "$T/ca.key" -CAcreateserial -out "$T/tls.pem" -days 2 \
    -extfile "$T/san.ext" >/dev/null 2>&1 || fail "openssl: certificate"
TLS=$T/srv-tls
mkdir -p "$TLS"
cp "$SRV/config.json" "$TLS/config.json"
start_server "$TLS" --tls-cert "$T/tls.pem" --tls-key "$T/tls.key"
TBASE=https://127.0.0.1:$PORT
config "{source: vault, address: '$TBASE', path: nstance/kek, field: kek, ca_file: $T/ca.pem}"
primary_id "vault $TBASE secret/nstance/kek#kek"
assert_eq "$PRIMARY_ID" "$ID_V" "vault over https: same key"
check vault-1
config "{source: vault, address: '$TBASE', path: nstance/kek, field: kek}"
fails 5 "vault $TBASE secret/nstance/kek#kek: reading the secret: no answer" get vault-1
[ ! -s "$TLS/violations.log" ] || fail "violations at the TLS server: $(cat "$TLS/violations.log")"

# ==== reload on SIGHUP ====
echo "# reload"
config "$E_VAULT" "$E_AWS_SM"
RELOAD_OUT=$T/reload.out
"$top_builddir/tests/tools/ns-reload" "$T/config.yaml" >"$RELOAD_OUT" 2>"$T/reload.err" &
RELOAD_PID=$!
ns_bg_pid "$RELOAD_PID"
# wait_reports N: until the tool has written N reports (lines ".").
wait_reports() {
    local i
    for i in $(seq 100); do
        [ "$(grep -cx '\.' "$RELOAD_OUT")" -ge "$1" ] && return 0
        sleep 0.1
    done
    cat "$RELOAD_OUT" "$T/reload.err" >&2
    fail "ns-reload: no report $1"
}
wait_reports 1
assert_contains "$RELOAD_OUT" "primary $ID_V vault $BASE secret/nstance/kek#kek" "reload tool: first load"
# the key in vault is rotated: the reload picks up the new one
newkey KV2
SECRETS+=("$KV2_HEX" "$KV2_B64")
VAULT_SECRETS="\"secret/nstance/kek\": {\"kek\": \"$KV2_HEX\"}"
srv_write
kill -HUP "$RELOAD_PID"
wait_reports 2
ID_V2=$(awk '/^reloaded$/ { r = 1 } r && $1 == "primary" { print $2; exit }' "$RELOAD_OUT")
[ "${#ID_V2}" = 32 ] && [ "$ID_V2" != "$ID_V" ] || fail "reload: the primary id did not change ($ID_V2)"
assert_contains "$RELOAD_OUT" "old $ID_A aws-secrets-manager" "reload: the old key stays"
assert_contains "$T/reload.err" "reload: key $ID_V (vault $BASE secret/nstance/kek#kek) is no longer loaded" \
    "reload: the vanished id is reported"
# the source breaks: the reload fails and the ring keeps the keys it had
FAULTS='[{"match": "/v1/secret/data/", "status": 503, "count": -1}]'
srv_write
kill -HUP "$RELOAD_PID"
wait_reports 3
assert_contains "$RELOAD_OUT" "reload failed: key source unreachable or failed" "reload: failure reported"
[ "$(awk '/^reload failed/ { r = 1 } r && $1 == "primary" { print $2; exit }' "$RELOAD_OUT")" = "$ID_V2" ] ||
    fail "reload: a failed reload changed the ring"
kill -TERM "$RELOAD_PID"
wait "$RELOAD_PID" || fail "ns-reload exited non-zero"
for f in "$RELOAD_OUT" "$T/reload.err"; do
    for s in "${SECRETS[@]}"; do
        grep -qF -- "$s" "$f" && fail "a secret value appears in the reload tool's output"
    done
done
FAULTS="[]"
srv_write

# ==== the server saw only well-formed requests ====
if [ -s "$SRV/violations.log" ]; then
    cat "$SRV/violations.log" >&2
    fail "the test server saw requests that break the documented protocol"
fi
# and nothing secret is in its request log either (it logs method, path and status only)
for s in "${SECRETS[@]}"; do
    grep -qF -- "$s" "$SRV/requests.log" && fail "a secret in the request log"
done
echo "# ok"
