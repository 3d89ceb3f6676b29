#!/usr/bin/env bash
# Prints every Secret the Kubernetes deployment needs, as YAML for `kubectl apply -f -`:
#
#   deploy/k8s/make-secrets.sh --tls-cert edge.crt --tls-key edge.key \
#       --sfu-tls-cert live.crt --sfu-tls-key live.key [--postgres-url postgres://...] \
#       --keep-dir ./preau-secrets | kubectl apply -f -
#
# It makes what is made here (the room-token key pair, the TURN secret, the ENT back
# end's API key, the webhook's signing secret) and writes them to --keep-dir too (mode
# 0700): the API key and the webhook secret go to the ENT's back end. Certificates are
# the operator's (cert-manager, or the académie's PKI): the edge's for the Ingress, a
# wildcard for the SFU nodes and coturn (*.live.example.fr). Run again with the same
# --keep-dir, it reuses what it made: a re-run never rotates a key by surprise.
set -euo pipefail

tls_cert="" tls_key="" sfu_cert="" sfu_key="" pg_url="" keep=""
while [ $# -gt 0 ]; do
  case "$1" in
    --tls-cert) tls_cert=$2; shift 2 ;;
    --tls-key) tls_key=$2; shift 2 ;;
    --sfu-tls-cert) sfu_cert=$2; shift 2 ;;
    --sfu-tls-key) sfu_key=$2; shift 2 ;;
    --postgres-url) pg_url=$2; shift 2 ;;
    --keep-dir) keep=$2; shift 2 ;;
    *) echo "make-secrets.sh: unknown argument $1 (see the header of this script)" >&2; exit 2 ;;
  esac
done
for v in tls_cert tls_key sfu_cert sfu_key keep; do
  if [ -z "${!v}" ]; then
    echo "make-secrets.sh: --${v//_/-} is required (see the header of this script)" >&2
    exit 2
  fi
done
for f in "$tls_cert" "$tls_key" "$sfu_cert" "$sfu_key"; do
  [ -r "$f" ] || { echo "make-secrets.sh: $f: cannot read it" >&2; exit 2; }
done
command -v openssl >/dev/null || { echo "make-secrets.sh: openssl is needed" >&2; exit 2; }

mkdir -p "$keep" && chmod 700 "$keep"
random() { openssl rand -hex 32; }
[ -s "$keep/room-private.pem" ] || openssl genpkey -algorithm ed25519 -out "$keep/room-private.pem" 2>/dev/null
openssl pkey -in "$keep/room-private.pem" -pubout -out "$keep/room-public.pem" 2>/dev/null
[ -s "$keep/turn-secret" ] || random >"$keep/turn-secret"
[ -s "$keep/api-key" ] || random >"$keep/api-key"
[ -s "$keep/webhook-secret" ] || random >"$keep/webhook-secret"
# The SFU nodes' own key: they list class recordings in the announcements.
[ -s "$keep/sfu-api-key" ] || random >"$keep/sfu-api-key"
printf '{"keys": [{"name": "ent-backend", "key": "%s", "schools": ["*"]}, {"name": "sfu", "key": "%s", "schools": ["*"]}]}\n' \
  "$(cat "$keep/api-key")" "$(cat "$keep/sfu-api-key")" >"$keep/api-keys.json"

b64() { base64 -w0 <"$1"; }
b64s() { printf '%s' "$1" | base64 -w0; }
secret() { # name type key=file...
  local name=$1 type=$2; shift 2
  printf -- '---\napiVersion: v1\nkind: Secret\nmetadata: { name: %s, namespace: preau }\ntype: %s\ndata:\n' "$name" "$type"
  for kv in "$@"; do printf '  %s: %s\n' "${kv%%=*}" "$(b64 "${kv#*=}")"; done
}
secret preau-tls kubernetes.io/tls "tls.crt=$tls_cert" "tls.key=$tls_key"
secret preau-sfu-tls kubernetes.io/tls "tls.crt=$sfu_cert" "tls.key=$sfu_key"
secret turn-tls kubernetes.io/tls "tls.crt=$sfu_cert" "tls.key=$sfu_key"
secret preau-room-keys Opaque "private=$keep/room-private.pem" "public=$keep/room-public.pem"
secret preau-turn Opaque "secret=$keep/turn-secret"
secret preau-api-keys Opaque "api-keys.json=$keep/api-keys.json"
secret preau-sfu-api-key Opaque "key=$keep/sfu-api-key"
secret preau-webhook Opaque "secret=$keep/webhook-secret"
if [ -n "$pg_url" ]; then
  printf -- '---\napiVersion: v1\nkind: Secret\nmetadata: { name: preau-postgres, namespace: preau }\ntype: Opaque\ndata:\n  url: %s\n' "$(b64s "$pg_url")"
fi
