"""Load tool for DevHub: N concurrent device connections over MQTT/TLS with valid SAS tokens,
then QoS 1 telemetry from all of them. A small asyncio MQTT 3.1.1 client, so one process holds
thousands of connections without a thread each.

  python3 load.py --host 127.0.0.1 --port P --control http://127.0.0.1:H --ca ca.pem \
      --devices 1000 --messages 20 --window 10 --pid DEVHUB_PID
"""
import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import os
import ssl
import struct
import time
import urllib.parse
import urllib.request

MASTER = b"devhub-bench master key"


def device_key(i):
    return hmac.new(MASTER, f"bench-{i}".encode(), hashlib.sha256).digest()


def sas(resource, key, ttl=3600):
    expiry = int(time.time()) + ttl
    sr = urllib.parse.quote(resource, safe="")
    sig = base64.b64encode(hmac.new(key, f"{sr}\n{expiry}".encode(), hashlib.sha256).digest()).decode()
    return f"SharedAccessSignature sr={sr}&sig={urllib.parse.quote(sig, safe='')}&se={expiry}"


def remaining(n):
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def mqtt_string(s):
    b = s.encode()
    return struct.pack(">H", len(b)) + b


def connect_packet(client_id, username, password):
    body = mqtt_string("MQTT") + bytes([4, 0xC2]) + struct.pack(">H", 600)
    body += mqtt_string(client_id) + mqtt_string(username) + mqtt_string(password)
    return b"\x10" + remaining(len(body)) + body


def publish_packet(topic, payload, pid):
    body = mqtt_string(topic) + struct.pack(">H", pid) + payload
    return b"\x32" + remaining(len(body)) + body


async def read_packet(reader):
    first = (await reader.readexactly(1))[0]
    length, multiplier = 0, 1
    while True:
        byte = (await reader.readexactly(1))[0]
        length += (byte & 0x7F) * multiplier
        multiplier *= 128
        if not byte & 0x80:
            break
    return first, await reader.readexactly(length)


class Device:
    def __init__(self, i, args, ctx):
        self.i, self.args, self.ctx = i, args, ctx
        self.id = f"bench-{i}"

    async def connect(self):
        self.reader, self.writer = await asyncio.open_connection(
            self.args.host, self.args.port, ssl=self.ctx, server_hostname=self.args.hub)
        username = f"{self.args.hub}/{self.id}/?api-version=2021-04-12"
        self.writer.write(connect_packet(self.id, username, sas(f"{self.args.hub}/devices/{self.id}", device_key(self.i))))
        first, body = await read_packet(self.reader)
        if first != 0x20 or body[1] != 0:
            raise RuntimeError(f"{self.id}: CONNACK {body.hex()}")

    async def send(self, count, window, payload):
        topic = f"devices/{self.id}/messages/events/bench=1&device={self.i}"
        acked, sent, pid = 0, 0, 0
        while acked < count:
            while sent < count and sent - acked < window:
                pid = pid % 65535 + 1
                self.writer.write(publish_packet(topic, payload, pid))
                sent += 1
            await self.writer.drain()
            first, _ = await read_packet(self.reader)
            if first == 0x40:
                acked += 1
        return acked


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_seconds(pid):
    """User + system CPU time of a process, from /proc (clock ticks of 1/100 s)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def api(control, method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(control + path, method=method, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--hub", default="127.0.0.1")
    parser.add_argument("--control", required=True)
    parser.add_argument("--ca", required=True)
    parser.add_argument("--pid", type=int, required=True)
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=20, help="QoS 1 messages per device")
    parser.add_argument("--window", type=int, default=10, help="unacknowledged messages per device")
    parser.add_argument("--payload", type=int, default=64, help="payload bytes")
    args = parser.parse_args()

    rss_idle = rss_kib(args.pid)
    started = time.time()
    for i in range(args.devices):
        api(args.control, "POST", "/api/devices",
            {"deviceId": f"bench-{i}", "primaryKey": base64.b64encode(device_key(i)).decode()})
    print(f"created {args.devices} devices in {time.time() - started:.1f} s")

    ctx = ssl.create_default_context(cafile=args.ca)
    devices = [Device(i, args, ctx) for i in range(args.devices)]
    gate = asyncio.Semaphore(64)

    async def connect(device):
        async with gate:
            await device.connect()

    started = time.time()
    await asyncio.gather(*(connect(d) for d in devices))
    connect_seconds = time.time() - started
    await asyncio.sleep(1)
    listed = api(args.control, "GET", "/api")
    rss_held = rss_kib(args.pid)
    print(f"connected {args.devices} devices (TLS + SAS) in {connect_seconds:.1f} s; DevHub reports {listed['connected']} connected")
    print(f"DevHub RSS: {rss_idle / 1024:.1f} MiB idle, {rss_held / 1024:.1f} MiB holding {args.devices} connections "
          f"({(rss_held - rss_idle) / args.devices:.0f} KiB per connection)")

    payload = b"x" * args.payload
    cpu_before = cpu_seconds(args.pid)
    started = time.time()
    counts = await asyncio.gather(*(d.send(args.messages, args.window, payload) for d in devices))
    seconds = time.time() - started
    total = sum(counts)
    cpu = cpu_seconds(args.pid) - cpu_before
    rss_after = rss_kib(args.pid)
    stored = api(args.control, "GET", "/api")["telemetryStored"]
    print(f"D2C QoS 1: {total} messages acknowledged (PUBACK after the SQLite commit) in {seconds:.2f} s "
          f"= {total / seconds:,.0f} msg/s from {args.devices} connections, window {args.window}, {args.payload}-byte payloads")
    print(f"DevHub used {cpu:.2f} CPU-seconds for them: {total / max(cpu, 0.01):,.0f} messages per DevHub CPU-second "
          "(the load tool shares the machine)")
    print(f"DevHub stored {stored} messages; RSS after the run {rss_after / 1024:.1f} MiB")
    for d in devices:
        d.writer.close()


asyncio.run(main())
