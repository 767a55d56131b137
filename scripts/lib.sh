# Shared shell helpers for scripts/demo and Benchmarks/: free ports, test certificates, brokers.
# Everything lives in one work directory and binds to 127.0.0.1 only.

# A free TCP port on 127.0.0.1.
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# make_certs DIR — a throwaway CA and a server certificate for localhost/127.0.0.1.
make_certs() {
    local dir=$1
    openssl req -x509 -newkey rsa:2048 -nodes -keyout "$dir/ca.key" -out "$dir/ca.crt" -days 2 \
        -subj "/CN=gatehouse demo CA" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -keyout "$dir/server.key" -out "$dir/server.csr" \
        -subj "/CN=localhost" 2>/dev/null
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >"$dir/san.ext"
    openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial \
        -out "$dir/server.crt" -days 2 -extfile "$dir/san.ext" 2>/dev/null
    chmod 644 "$dir"/*.key  # mosquitto may drop to its own user and must read its key
}

# start_broker NAME CONF_BODY DIR — starts mosquitto with the given config lines; sets NAME_PID.
start_broker() {
    local name=$1 body=$2 dir=$3
    mkdir -p "$dir/$name-data"
    {
        echo "$body"
        echo "persistence_location $dir/$name-data/"
        echo "user root"
    } >"$dir/$name.conf"
    mosquitto -c "$dir/$name.conf" >"$dir/$name.log" 2>&1 &
    printf -v "${name}_PID" '%s' $!
}

# site_broker_settings — the site-broker settings the gatehouse package installs as
# /etc/mosquitto/conf.d/gatehouse-queue.conf (queue by bytes, persistence, the packet size limit;
# docs/site-broker.md), for a start_broker body: the demo's and the tests' site brokers run with
# exactly what a gateway's runs with.
site_broker_settings() {
    cat "$(dirname "${BASH_SOURCE[0]}")/../packaging/site-broker/gatehouse-queue.conf"
}

# wait_port PORT — until something listens on 127.0.0.1:PORT (5 s at most).
wait_port() {
    for _ in $(seq 50); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "nothing listens on port $1" >&2
    return 1
}

# gatehouse_config WORK GATEWAY_LINES OUTBOX_LINES TAIL — a gatehoused configuration between a site
# broker on SITE_PORT and a TLS hub broker on HUB_PORT (WORK/ca.crt), plugins from BIN, state and
# group key in WORK, written to WORK/gatehouse.toml. GATEWAY_LINES go into [gateway], OUTBOX_LINES
# into [outbox] (none: no such section), TAIL at the end.
gatehouse_config() {
    local work=$1 gateway_lines=$2 outbox_lines=$3 tail=$4
    {
        printf '[gateway]\nstate_db = "%s"\nplugin_dir = "%s"\n%s\n' "$work/state.db" "$BIN" "$gateway_lines"
        [ -n "$outbox_lines" ] && printf '[outbox]\n%s\n' "$outbox_lines"
        cat <<TOML
[identity]
group_key_file = "$work/group.key"
[site]
plugin = "mqtt"
port = $SITE_PORT
[hub]
plugin = "mqtt"
hostname = "localhost"
port = $HUB_PORT
ca_file = "$work/ca.crt"
$tail
TOML
    } >"$work/gatehouse.toml"
}
