#!/usr/bin/env python3
"""Provisioning benchmark driver (see run.sh): DEVICES new leaf devices publish their first
telemetry on a site broker; gatehoused registers each with DevHub's DPS over MQTT/TLS on its
behalf, every key derived inside swtpm, then relays the telemetry. Prints, for each
[provisioning] concurrency, the time from the first message to all assigned and to all relayed.

Real processes only: swtpm (fresh state, Unix socket), gatehouse-devhub, mosquitto, gatehoused.
"""
import argparse
import base64
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import paho.mqtt.client as mqtt


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout, step=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return False


class Processes:
    def __init__(self):
        self.children = []

    def start(self, name, argv, work, **kwargs):
        log = open(os.path.join(work, name + ".log"), "w")
        child = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, **kwargs)
        self.children.append(child)
        return child

    def stop(self, child):
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(15)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()

    def stop_all(self):
        for child in reversed(self.children):
            self.stop(child)


def api(control, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        control + path, method="POST" if body is not None else "GET", data=data,
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def status(gatehouse, config):
    out = subprocess.run([gatehouse, "status", "--json", "-c", config], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def threads(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("Threads:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_seconds(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return 0.0


def publish_first_telemetry(port, devices):
    """One QoS 1 message per device (one MQTT client: the broker, not 1,000 sockets, is not
    what is measured). Returns the time the first message was handed to the broker."""
    client = mqtt.Client(client_id="bench-leaves", clean_session=True)
    client.max_inflight_messages_set(200)
    client.connect("127.0.0.1", port)
    client.loop_start()
    started = time.monotonic()
    infos = [
        client.publish(f"devices/{device}/messages/events/", f"first message of {device}".encode(), qos=1)
        for device in devices
    ]
    for info in infos:
        info.wait_for_publish(30)
    client.loop_stop()
    client.disconnect()
    return started, time.monotonic()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", required=True)
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[4, 16])
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()

    work = tempfile.mkdtemp(prefix="gatehouse-prov-bench.")
    procs = Processes()
    try:
        # swtpm, fresh state, Unix socket (the swtpm TCTI opens a connection per command).
        os.makedirs(f"{work}/swtpm-state")
        sock = f"{work}/swtpm.sock"
        procs.start("swtpm", [
            "swtpm", "socket", "--tpm2", "--tpmstate", f"dir={work}/swtpm-state", "--server",
            f"type=unixio,path={sock}", "--ctrl", f"type=unixio,path={sock}.ctrl",
            "--flags", "not-need-init,startup-clear"], work)
        assert wait_for(lambda: os.path.exists(sock), 10), "swtpm did not start"
        tcti = f"swtpm:path={sock}"

        # DevHub: DPS + IoT Hub over MQTT/TLS on free ports (from devhub.json).
        devhub = procs.start("devhub", [
            f"{args.bin}/gatehouse-devhub", "serve", "--data", f"{work}/devhub", "--mqtt", "127.0.0.1:0",
            "--http", "127.0.0.1:0", "--hub-name", "localhost", "--log-level", "warning"], work)
        info_path = f"{work}/devhub/devhub.json"
        assert wait_for(lambda: os.path.exists(info_path) and os.path.getsize(info_path) > 0, 30), "DevHub did not start"
        time.sleep(0.2)
        info = json.load(open(info_path))
        dps_port = info["mqtt"]["port"]
        control = info["control"] if info["control"].startswith("http") else "http://" + info["control"]
        ca = f"{work}/devhub/ca.pem"

        # The site broker.
        site_port = free_port()
        os.makedirs(f"{work}/site-data")
        with open(f"{work}/site.conf", "w") as f:
            f.write(f"listener {site_port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
                    f"persistence_location {work}/site-data/\nmax_queued_messages 0\nmax_inflight_messages 500\n"
                    "user root\n")
        procs.start("site", ["mosquitto", "-c", f"{work}/site.conf"], work)
        assert wait_for(lambda: socket.socket().connect_ex(("127.0.0.1", site_port)) == 0, 10), "mosquitto did not start"

        group_key = secrets.token_bytes(32)
        api(control, "/api/enrollment-groups", {"name": "bench", "primaryKey": base64.b64encode(group_key).decode()})

        print(f"== {args.devices} new leaf devices, DPS over MQTT/TLS (DevHub), keys derived in swtpm ({tcti})")
        print(f"{'concurrency':>11}  {'published':>9}  {'all assigned':>12}  {'registrations/s':>15}  "
              f"{'all relayed':>11}  {'gatehoused CPU':>14}  {'threads max':>11}")
        results = []
        for run, concurrency in enumerate(args.concurrency):
            prefix = f"bench{run}-c{concurrency}"
            os.makedirs(f"{work}/{prefix}/tpm")
            config = f"{work}/{prefix}/gatehouse.toml"
            with open(config, "w") as f:
                f.write(f"""[gateway]
state_db = "{work}/{prefix}/state.db"
plugin_dir = "{args.bin}"
log_level = "info"

[identity]
tpm = "{tcti}"
group_key_blob = "{work}/{prefix}/tpm/group-key.blob"

[provisioning]
id_scope = "0ne00DEVHUB"
endpoint = "localhost"
port = {dps_port}
ca_file = "{ca}"
allow = ["{prefix}-*"]
concurrency = {concurrency}

[site]
plugin = "mqtt"
port = {site_port}

[hub]
plugin = "mqtt"
hostname = "localhost"
port = {dps_port}
ca_file = "{ca}"
""")
            subprocess.run([f"{args.bin}/gatehouse", "tpm", "import-group-key", "-c", config],
                           input=base64.b64encode(group_key).decode() + "\n", text=True, check=True,
                           capture_output=True)
            gatehoused = procs.start(f"gatehoused-{prefix}", [f"{args.bin}/gatehoused", "-c", config], work)
            log = f"{work}/gatehoused-{prefix}.log"
            assert wait_for(lambda: "subscribed to" in open(log).read() or gatehoused.poll() is not None, 30), \
                "gatehoused did not subscribe"
            assert gatehoused.poll() is None, open(log).read()
            devices = [f"{prefix}-{i:04d}" for i in range(1, args.devices + 1)]
            stored_before = api(control, "/api")["telemetryStored"]
            cpu_before = cpu_seconds(gatehoused.pid)

            started, published = publish_first_telemetry(site_port, devices)
            assigned_at = relayed_at = None
            max_threads = 0
            failed = 0
            deadline = started + args.timeout
            while time.monotonic() < deadline and (assigned_at is None or relayed_at is None):
                max_threads = max(max_threads, threads(gatehoused.pid))
                if assigned_at is None:
                    states = [d.get("provisioning", "") for d in status(f"{args.bin}/gatehouse", config)["devices"]
                              if d.get("id", "").startswith(prefix)]
                    failed = sum(1 for s in states if s.startswith("failed"))
                    if sum(1 for s in states if s == "assigned") == args.devices:
                        assigned_at = time.monotonic()
                if relayed_at is None and api(control, "/api")["telemetryStored"] - stored_before >= args.devices:
                    relayed_at = time.monotonic()
                time.sleep(0.2)
            cpu = cpu_seconds(gatehoused.pid) - cpu_before
            procs.stop(gatehoused)

            def fmt(t):
                return f"{t - started:10.1f} s" if t is not None else "   timeout"
            rate = f"{args.devices / (assigned_at - started):13.1f}/s" if assigned_at else "            -"
            print(f"{concurrency:>11}  {published - started:7.2f} s  {fmt(assigned_at):>12}  {rate:>15}  "
                  f"{fmt(relayed_at):>11}  {cpu:12.1f} s  {max_threads:>11}", flush=True)
            if failed:
                print(f"   ({failed} device(s) seen failed at the last poll; see {log})")
            results.append((concurrency, assigned_at, relayed_at))
        return 0 if all(a and r for _, a, r in results) else 1
    finally:
        procs.stop_all()
        if args.keep:
            print(f"(kept {work})")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
