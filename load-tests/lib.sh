# Sourced by quick.sh and live.sh: a work folder ($W) removed at exit with every
# background job, `wait_port`, and Janus (Debian `janus`, videoroom plugin, WebSocket API)
# on loopback as the live-class reference:
#
#   start_janus <ws port>   # sets JANUS_PID (empty when the reference cannot run)
#
# Why the interface: Janus's ICE skips loopback interfaces, so on its own it offers only
# the machine's external addresses, and load tests stay within 127.0.0.0/8. A TUN
# interface (not flagged loopback) holding 127.0.0.2/32 gives it a candidate in
# 127.0.0.0/8; the kernel still delivers 127.0.0.2 over `lo` (it is a local address), so
# no packet leaves the machine. The interface needs root (or CAP_NET_ADMIN) and
# /dev/net/tun; a small holder keeps it open so it is up (carrier). Without them the
# reference is skipped, loudly.

JANUS_IF=preau-janus0
JANUS_PID=""
JANUS_HOLDER=""

W=$(mktemp -d)
cleanup() { stop_janus; kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$W"; }
trap cleanup EXIT INT TERM

# NATS with WebSocket on loopback, the broker reference (Debian's nats-server, installed
# when missing): `start_nats <client port> <websocket port>` sets NATS to its pid.
start_nats() {
  if ! command -v nats-server >/dev/null 2>&1; then
    local sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get update -qq && $sudo apt-get install -y -qq nats-server
  fi
  cat >"$W/nats.conf" <<CONF
listen: 127.0.0.1:$1
websocket { listen: "127.0.0.1:$2", no_tls: true }
max_connections: 20000
CONF
  nats-server -c "$W/nats.conf" >"$W/nats.log" 2>&1 &
  NATS=$!
}

wait_port() {
  for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done
  echo "port $1 did not open" >&2; return 1
}

start_janus() {
  local dir=$W port=$1
  JANUS_PID=""
  if ! command -v janus >/dev/null 2>&1; then
    local sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get install -y -qq janus >/dev/null 2>&1 ||
      { $sudo apt-get update -qq && $sudo apt-get install -y -qq janus >/dev/null; } ||
      { echo "Janus reference SKIPPED: apt-get install janus failed" >&2; return 0; }
  fi
  if ! ip link show "$JANUS_IF" >/dev/null 2>&1; then
    if ! { ip tuntap add dev "$JANUS_IF" mode tun && ip addr add 127.0.0.2/32 dev "$JANUS_IF" &&
      ip link set "$JANUS_IF" up; } 2>"$dir/janus-if.err"; then
      echo "Janus reference SKIPPED: cannot create the 127.0.0.2 interface ($(cat "$dir/janus-if.err"))" >&2
      ip link del "$JANUS_IF" 2>/dev/null || true
      return 0
    fi
  fi
  python3 - "$JANUS_IF" <<'PY' &
import fcntl, os, signal, struct, sys
fd = os.open("/dev/net/tun", os.O_RDWR)
# TUNSETIFF with IFF_TUN | IFF_NO_PI: attach, so the interface has carrier while we live.
fcntl.ioctl(fd, 0x400454CA, struct.pack("16sH", sys.argv[1].encode(), 0x0001 | 0x1000))
signal.pause()
PY
  JANUS_HOLDER=$!
  local lib
  lib=$(dirname "$(find /usr/lib -name libjanus_videoroom.so -path '*janus/plugins*' 2>/dev/null | head -1)")/..
  mkdir -p "$dir/janus"
  cat >"$dir/janus/janus.jcfg" <<CONF
general: {
  configs_folder = "$dir/janus"
  plugins_folder = "$lib/plugins"
  transports_folder = "$lib/transports"
  events_folder = "$lib/events"
  loggers_folder = "$dir/janus/no-loggers"
  debug_level = 3
  session_timeout = 0
}
media: { rtp_port_range = "20000-29999" }
nat: { ice_enforce_list = "$JANUS_IF" }
plugins: {
  disable = "libjanus_audiobridge.so,libjanus_duktape.so,libjanus_echotest.so,libjanus_lua.so,libjanus_nosip.so,libjanus_recordplay.so,libjanus_sip.so,libjanus_streaming.so,libjanus_textroom.so,libjanus_videocall.so,libjanus_voicemail.so"
}
transports: { disable = "libjanus_mqtt.so,libjanus_nanomsg.so,libjanus_pfunix.so,libjanus_rabbitmq.so,libjanus_http.so" }
events: { broadcast = false }
CONF
  mkdir -p "$dir/janus/no-loggers"
  echo 'general: { }' >"$dir/janus/janus.plugin.videoroom.jcfg"
  cat >"$dir/janus/janus.transport.websockets.jcfg" <<CONF
general: { json = "compact" ws = true ws_port = $port ws_ip = "127.0.0.1" wss = false }
admin: { admin_ws = false }
CONF
  janus -F "$dir/janus" -C "$dir/janus/janus.jcfg" >"$dir/janus.log" 2>&1 &
  JANUS_PID=$!
}

stop_janus() {
  [ -n "$JANUS_PID" ] && kill "$JANUS_PID" 2>/dev/null
  [ -n "$JANUS_HOLDER" ] && kill "$JANUS_HOLDER" 2>/dev/null
  ip link del "$JANUS_IF" 2>/dev/null || true
  JANUS_PID=""; JANUS_HOLDER=""
}

# The engine spike's browser scripts (spike-interop.sh, spike-nack.sh): Debian's Chromium,
# Node and npm (installed when missing), and playwright-core from spike-browser's lockfile.
need_spike_browser() {
  local sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  command -v chromium >/dev/null 2>&1 || $sudo apt-get install -y -qq chromium
  command -v npm >/dev/null 2>&1 || $sudo apt-get install -y -qq nodejs npm
  (cd load-tests/spike-browser && npm ci --no-audit --no-fund >/dev/null)
}
