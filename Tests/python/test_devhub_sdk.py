"""DevHub driven by Azure's own Python device SDK (azure-iot-device 2.14).

Starts the real `gatehouse-devhub` binary on a loopback address of its own (the SDK hard-codes
port 8883), provisions a device through DPS with an enrollment group, then uses the hub
endpoint: telemetry with properties, C2D, direct methods, twins, and refusals of wrong keys.

The binary is found through $GATEHOUSE_BIN (the build's bin folder, or the binary itself),
else `swift build --show-bin-path`. Run: `pytest Tests/python`.
"""

import base64
import hashlib
import hmac
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from azure.iot.device import (
    IoTHubDeviceClient,
    Message,
    MethodResponse,
    ProvisioningDeviceClient,
    exceptions,
)

from devhub_binary import find_binary, free_port

REPO = Path(__file__).resolve().parents[2]
ID_SCOPE = "0ne00PYTEST"
GROUP_KEY = base64.b64encode(hashlib.sha256(b"gatehouse devhub pytest group").digest()).decode()


def derive_key(group_key: str, registration_id: str) -> str:
    """The per-device key of an enrollment group (docs/protocols.md §1.a)."""
    mac = hmac.new(base64.b64decode(group_key), registration_id.encode(), hashlib.sha256)
    return base64.b64encode(mac.digest()).decode()


def free_loopback_for_8883() -> str:
    """A 127.0.0.x address whose port 8883 is free ($DEVHUB_TEST_HOST overrides)."""
    if os.environ.get("DEVHUB_TEST_HOST"):
        return os.environ["DEVHUB_TEST_HOST"]
    for last in range(17, 250):
        host = f"127.0.0.{last}"
        with socket.socket() as probe:
            try:
                probe.bind((host, 8883))
                return host
            except OSError:
                continue
    pytest.fail("no 127.0.0.x address with port 8883 free")


class DevHub:
    """A running gatehouse-devhub and a client of its control API."""

    def __init__(self, binary: Path):
        self.dir = Path(tempfile.mkdtemp(prefix="devhub-pytest."))
        self.host = free_loopback_for_8883()
        self.http_port = free_port()
        self.log_path = self.dir / "devhub.log"
        self.log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            [
                str(binary), "serve", "--data", str(self.dir / "data"),
                "--mqtt", f"{self.host}:8883", "--http", f"127.0.0.1:{self.http_port}",
                "--id-scope", ID_SCOPE, "--log-level", "debug",
            ],
            stdout=self.log, stderr=subprocess.STDOUT,
        )
        deadline = time.time() + 20
        while time.time() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"gatehouse-devhub exited with {self.process.returncode}:\n{self.log_text()}")
            try:
                if self.api("GET", "/health")[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.1)
        else:
            self.stop()
            pytest.fail(f"gatehouse-devhub did not answer within 20 s:\n{self.log_text()}")
        self.ca = (self.dir / "data" / "ca.pem").read_text()

    def log_text(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")

    def api(self, method: str, path: str, body=None):
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.http_port}{path}", method=method, data=data,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"null")

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def devhub():
    hub = DevHub(find_binary())
    status, _ = hub.api("POST", "/api/enrollment-groups", {"name": "pytest-group", "primaryKey": GROUP_KEY})
    assert status == 201
    yield hub
    hub.stop()


def wait_for(condition, timeout=10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def provision(devhub, registration_id, key):
    client = ProvisioningDeviceClient.create_from_symmetric_key(
        provisioning_host=devhub.host, registration_id=registration_id, id_scope=ID_SCOPE,
        symmetric_key=key, server_verification_cert=devhub.ca,
    )
    return client.register()  # it disconnects by itself when done


@pytest.fixture(scope="module")
def provisioned(devhub):
    registration_id = "pytest-device-1"
    key = derive_key(GROUP_KEY, registration_id)
    result = provision(devhub, registration_id, key)
    return result, key


@pytest.fixture
def device(devhub, provisioned):
    result, key = provisioned
    client = IoTHubDeviceClient.create_from_symmetric_key(
        symmetric_key=key, hostname=result.registration_state.assigned_hub,
        device_id=result.registration_state.device_id, server_verification_cert=devhub.ca,
    )
    client.connect()
    yield client, result.registration_state.device_id
    client.shutdown()


def test_dps_registration_through_enrollment_group(devhub, provisioned):
    result, _ = provisioned
    assert result.status == "assigned"
    assert result.registration_state.assigned_hub == devhub.host
    assert result.registration_state.device_id == "pytest-device-1"
    assert result.registration_state.sub_status == "initialAssignment"
    status, device = devhub.api("GET", "/api/devices/pytest-device-1")
    assert status == 200
    assert device["source"] == "dps:group:pytest-group"
    # The hub device got the derived key, which is what the SDK signs with next.
    assert device["primaryKey"] == derive_key(GROUP_KEY, "pytest-device-1")


def test_dps_individual_enrollment_maps_device_id(devhub):
    key = base64.b64encode(b"k" * 32).decode()
    status, _ = devhub.api(
        "POST", "/api/enrollments", {"registrationId": "pytest-individual", "primaryKey": key, "deviceId": "mapped-dev"}
    )
    assert status == 201
    result = provision(devhub, "pytest-individual", key)
    assert result.status == "assigned"
    assert result.registration_state.device_id == "mapped-dev"
    assert devhub.api("GET", "/api/devices/mapped-dev")[0] == 200


def test_telemetry_with_custom_properties_recorded_exactly(devhub, device):
    client, device_id = device
    message = Message('{"temperature": 21.5}')
    message.message_id = "msg-0001"
    message.content_type = "application/json"
    message.content_encoding = "utf-8"
    message.custom_properties["zone"] = "hall/2 & more"
    message.custom_properties["alert"] = "true"
    message.custom_properties["ünïcode"] = "välue=1"
    client.send_message(message)
    # send_message returns after the PUBACK, which DevHub sends once the message is stored.
    _, body = devhub.api("GET", f"/api/telemetry?device={device_id}")
    record = [m for m in body["messages"] if m["payload"] == '{"temperature": 21.5}'][-1]
    assert record["deviceId"] == device_id
    assert record["qos"] == 1
    # System properties first, then the custom ones in the order the SDK put them (sorted).
    assert record["properties"] == [
        ["$.mid", "msg-0001"],
        ["$.ct", "application/json"],
        ["$.ce", "utf-8"],
        ["alert", "true"],
        ["zone", "hall/2 & more"],
        ["ünïcode", "välue=1"],
    ]


def test_c2d_message_with_properties(devhub, device):
    client, device_id = device
    received = []
    client.on_message_received = received.append
    time.sleep(0.3)  # the SDK subscribes when the handler is set
    status, sent = devhub.api(
        "POST", f"/api/devices/{device_id}/c2d",
        {"payload": "open the valve", "properties": [["command", "valve/open"], ["level", "80 %"]]},
    )
    assert status == 202
    assert wait_for(lambda: received), devhub.log_text()
    message = received[0]
    assert message.data == b"open the valve"
    assert message.custom_properties == {"command": "valve/open", "level": "80 %"}
    assert message.message_id == sent["messageId"]
    assert wait_for(lambda: devhub.api("GET", f"/api/devices/{device_id}/c2d")[1][-1]["state"] == "delivered")


def test_c2d_queued_while_offline_is_delivered_on_connect(devhub, provisioned):
    result, key = provisioned
    device_id = result.registration_state.device_id
    status, _ = devhub.api("POST", f"/api/devices/{device_id}/c2d", {"payload": "while you were away"})
    assert status == 202
    received = []
    client = IoTHubDeviceClient.create_from_symmetric_key(
        symmetric_key=key, hostname=devhub.host, device_id=device_id, server_verification_cert=devhub.ca
    )
    client.on_message_received = received.append
    client.connect()
    try:
        assert wait_for(lambda: any(m.data == b"while you were away" for m in received)), devhub.log_text()
    finally:
        client.shutdown()


def test_direct_method_response_reaches_the_control_api(devhub, device):
    client, device_id = device

    def answer(request):
        payload = {"received": request.payload, "method": request.name}
        client.send_method_response(MethodResponse.create_from_method_request(request, 207, payload))

    client.on_method_request_received = answer
    time.sleep(0.3)
    status, body = devhub.api(
        "POST", f"/api/devices/{device_id}/methods/reboot",
        {"payload": {"delay": 5, "reason": "update"}, "responseTimeoutInSeconds": 10},
    )
    assert status == 200, body
    assert body == {"status": 207, "payload": {"received": {"delay": 5, "reason": "update"}, "method": "reboot"}}


def test_direct_method_timeout_and_offline_device(devhub, device):
    client, device_id = device
    client.on_method_request_received = lambda request: None  # never answers
    time.sleep(0.3)
    status, body = devhub.api(
        "POST", f"/api/devices/{device_id}/methods/slow", {"payload": None, "responseTimeoutInSeconds": 1}
    )
    assert status == 504, body
    status, body = devhub.api("POST", "/api/devices/mapped-dev/methods/anything", {"payload": 1})
    assert status == 404, body
    assert body["error"]["code"] == "DeviceNotOnline"


def test_twin_get_reported_and_desired_patches(devhub, device):
    client, device_id = device
    twin = client.get_twin()
    assert twin["reported"]["$version"] >= 1 and "$version" in twin["desired"]
    client.patch_twin_reported_properties({"firmware": "1.2.3", "sensors": {"t1": 20, "t2": None}})
    twin = client.get_twin()
    assert twin["reported"]["firmware"] == "1.2.3"
    assert twin["reported"]["sensors"] == {"t1": 20}
    _, stored = devhub.api("GET", f"/api/devices/{device_id}/twin")
    assert stored["properties"]["reported"]["firmware"] == "1.2.3"

    patches = []
    client.on_twin_desired_properties_patch_received = patches.append
    time.sleep(0.3)
    status, body = devhub.api("PATCH", f"/api/devices/{device_id}/twin/desired", {"interval": 30, "mode": "eco"})
    assert status == 200, body
    version = body["properties"]["desired"]["$version"]
    assert wait_for(lambda: patches), devhub.log_text()
    assert patches[0] == {"interval": 30, "mode": "eco", "$version": version}
    assert client.get_twin()["desired"]["interval"] == 30


def test_connection_state_is_listed(devhub, device):
    _, device_id = device
    _, devices = devhub.api("GET", "/api/devices")
    entry = next(d for d in devices if d["deviceId"] == device_id)
    assert entry["connected"] is True
    assert "primaryKey" not in entry


def test_hub_refuses_a_wrong_key(devhub, provisioned):
    result, _ = provisioned
    wrong = base64.b64encode(b"w" * 32).decode()
    client = IoTHubDeviceClient.create_from_symmetric_key(
        symmetric_key=wrong, hostname=devhub.host, device_id=result.registration_state.device_id,
        server_verification_cert=devhub.ca, connection_retry=False,
    )
    try:
        with pytest.raises(exceptions.CredentialError):
            client.connect()
    finally:
        client.shutdown()
    assert "SAS token refused: signature does not match" in devhub.log_text()


def test_dps_refuses_a_wrong_key(devhub):
    wrong = derive_key(base64.b64encode(b"not the group key" * 2).decode(), "pytest-intruder")
    with pytest.raises(exceptions.CredentialError):
        provision(devhub, "pytest-intruder", wrong)
    assert devhub.api("GET", "/api/devices/pytest-intruder")[0] == 404
