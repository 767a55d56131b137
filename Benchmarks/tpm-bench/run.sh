#!/usr/bin/env bash
# The TPM benchmark: HMAC operations per second inside a software TPM (swtpm, fresh state, Unix
# socket) through GatehouseTPM, and the time to derive DEVICES leaf-device keys.
#
#   Benchmarks/tpm-bench/run.sh [OPERATIONS] [DEVICES]        (defaults 2000, 1000)
#   SWTPM_TRANSPORT=tcp Benchmarks/tpm-bench/run.sh          (swtpm over TCP instead of a Unix socket)
#   TPM_TCTI=device:/dev/tpmrm0 Benchmarks/tpm-bench/run.sh   (a real TPM instead of swtpm)
#
# Needs the `tpm-bench` executable target (Package.swift, path Benchmarks/tpm-bench).
set -euo pipefail
cd "$(dirname "$0")/../.."
OPERATIONS=${1:-2000}
DEVICES=${2:-1000}

echo "== building tpm-bench (release)"
swift build -c release -q --product tpm-bench
BIN=$(swift build -c release --show-bin-path)

SWTPM_PID=""
WORK=$(mktemp -d /tmp/gatehouse-tpm-bench.XXXXXX)
cleanup() {
    if [ -n "$SWTPM_PID" ]; then kill "$SWTPM_PID" 2>/dev/null || true; wait "$SWTPM_PID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

TCTI=${TPM_TCTI:-}
if [ -z "$TCTI" ]; then
    command -v swtpm >/dev/null || { echo "swtpm is not installed (scripts/setup installs it)" >&2; exit 69; }
    mkdir -p "$WORK/state"
    # The swtpm TCTI opens a connection per TPM command: over TCP every command leaves a socket
    # in TIME-WAIT for a minute, so the default is a Unix socket (SWTPM_TRANSPORT=tcp for TCP).
    if [ "${SWTPM_TRANSPORT:-unix}" = tcp ]; then
        # A free pair of ports: P for commands, P+1 for swtpm's control channel.
        PORT=$(python3 -c '
import socket
while True:
    a = socket.socket(); a.bind(("127.0.0.1", 0)); p = a.getsockname()[1]
    b = socket.socket()
    try:
        b.bind(("127.0.0.1", p + 1)); print(p); break
    except OSError: pass
    finally: a.close(); b.close()')
        SERVER="type=tcp,port=$PORT,bindaddr=127.0.0.1"; CTRL="type=tcp,port=$((PORT + 1)),bindaddr=127.0.0.1"
        TCTI="swtpm:host=127.0.0.1,port=$PORT"
        PROBE="import socket; socket.create_connection(('127.0.0.1', $PORT)).close()"
    else
        SERVER="type=unixio,path=$WORK/swtpm.sock"; CTRL="type=unixio,path=$WORK/swtpm.sock.ctrl"
        TCTI="swtpm:path=$WORK/swtpm.sock"
        PROBE="import socket; s = socket.socket(socket.AF_UNIX); s.connect('$WORK/swtpm.sock'); s.close()"
    fi
    swtpm socket --tpm2 --tpmstate dir="$WORK/state" --server "$SERVER" --ctrl "$CTRL" \
        --flags not-need-init,startup-clear >"$WORK/swtpm.log" 2>&1 &
    SWTPM_PID=$!
    for _ in $(seq 100); do
        python3 -c "$PROBE" 2>/dev/null && break
        sleep 0.05
    done
    echo "== swtpm $(swtpm --version | head -1 | sed 's/.*version \([0-9.]*\).*/\1/') on $TCTI, fresh state"
fi
echo "== $(nproc) cores, $(uname -r); $OPERATIONS HMACs, $DEVICES devices"
"$BIN/tpm-bench" "$TCTI" "$OPERATIONS" "$DEVICES"
