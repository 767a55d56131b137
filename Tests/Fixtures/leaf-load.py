#!/usr/bin/env python3
"""Load for the `amqp` transport's integration tests and benchmark: many leaf devices at once.

    leaf-load.py create URL COUNT PREFIX GROUP_KEY_B64   # DevHub devices PREFIX0.., keys derived from the group key
    leaf-load.py publish PORT COUNT MESSAGES PREFIX      # MESSAGES QoS 1 messages from each device (bodies 0..), on the site broker

`create` posts to DevHub's control API (POST /api/devices); `publish` uses paho-mqtt (scripts/setup
installs it) with one client, messages of a device in order, devices interleaved.
"""
import base64
import hashlib
import hmac
import json
import sys
import time
import urllib.request


def create(url, count, prefix, group_key):
    key = base64.b64decode(group_key)
    for index in range(count):
        device = f"{prefix}{index}"
        derived = base64.b64encode(hmac.new(key, device.encode(), hashlib.sha256).digest()).decode()
        body = json.dumps({"deviceId": device, "primaryKey": derived}).encode()
        request = urllib.request.Request(
            url + "/api/devices", data=body, method="POST", headers={"Content-Type": "application/json"})
        urllib.request.urlopen(request).read()


def publish(port, count, messages, prefix):
    import paho.mqtt.client as mqtt
    client = mqtt.Client(client_id=f"leaf-load-{time.time()}")
    client.max_inflight_messages_set(1000)
    client.connect("127.0.0.1", port)
    client.loop_start()
    pending = []
    for message in range(messages):
        for index in range(count):
            pending.append(client.publish(f"devices/{prefix}{index}/messages/events/", str(message), qos=1))
    for info in pending:
        info.wait_for_publish()
    client.loop_stop()
    client.disconnect()


if __name__ == "__main__":
    if sys.argv[1] == "create":
        create(sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5])
    else:
        publish(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
