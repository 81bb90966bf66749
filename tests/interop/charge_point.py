"""An independent OCPP 1.6-J charge point (the PyPI `ocpp` package) against `evsource serve`.

Usage: charge_point.py <host:port> <operator token>

The `ocpp` package validates every CALL and CALLRESULT the CSMS sends against the OCPP 1.6
JSON schemas it ships, so a malformed answer from the CSMS fails this script. The script
exercises, in order: registration through the operator API; refused handshakes (unknown
id, wrong password, a user that is not the charge point id, no credentials, no ocpp1.6
subprotocol); boot, heartbeat and status notifications; a remote start the station
accepts (with Authorize, MeterValues and a DataTransfer) and one it rejects, each requested through the operator API; a transaction;
a newer connection replacing an older one; disconnect and reconnect. It exits non-zero,
saying what failed, at the first deviation.
"""

import asyncio
import base64
import json
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone

import websockets
from ocpp.routing import on
from ocpp.v16 import ChargePoint, call, call_result
from ocpp.v16.enums import Action, RemoteStartStopStatus

STATION = "PY-CP-1"
PASSWORD = "interop-password-0001"
TIMEOUT = 20.0


def now():
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


class Operator:
    def __init__(self, addr, token):
        self.base = f"http://{addr}"
        self.token = token

    def request(self, method, path, body=None, token=True):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        if token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"null")

    def events(self, stream):
        status, body = self.request("GET", f"/api/stations/{STATION}/events?stream={stream}&limit=1000")
        expect(status == 200, f"events of {stream}: HTTP {status} {body}")
        return body["events"]

    async def wait_for_event(self, stream, event_type, predicate=lambda data: True):
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            for event in self.events(stream):
                if event["type"] == event_type and predicate(event["data"]):
                    return event
            await asyncio.sleep(0.1)
        fail(f"no {event_type} in {stream} within {TIMEOUT} s: {self.events(stream)}")


def fail(message):
    print(f"interop: FAILED: {message}", file=sys.stderr)
    sys.exit(1)


def expect(condition, message):
    if not condition:
        fail(message)


def basic(user, password):
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


class Station(ChargePoint):
    """Accepts remote starts on connector 1 and rejects them on connector 2."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.remote_starts = asyncio.Queue()

    @on(Action.remote_start_transaction)
    def on_remote_start(self, id_tag, connector_id=None, **kwargs):
        status = RemoteStartStopStatus.accepted if connector_id == 1 else RemoteStartStopStatus.rejected
        self.remote_starts.put_nowait((connector_id, id_tag, status))
        return call_result.RemoteStartTransaction(status=status)


def connect(addr, station=STATION, password=PASSWORD, subprotocols=("ocpp1.6",), auth=True):
    headers = {"Authorization": basic(station, password)} if auth else {}
    return websockets.connect(
        f"ws://{addr}/ocpp/{station}",
        subprotocols=list(subprotocols),
        additional_headers=headers,
        open_timeout=TIMEOUT,
    )


async def expect_refused(addr, status, what, **kwargs):
    try:
        async with connect(addr, **kwargs):
            fail(f"{what}: the handshake succeeded")
    except websockets.exceptions.InvalidStatus as error:
        got = error.response.status_code
        expect(got == status, f"{what}: HTTP {got}, expected {status}")


async def remote_start(operator, station, connector, session):
    status, body = operator.request(
        "POST", f"/api/stations/{STATION}/unlock", {"connector": connector, "session": session}
    )
    expect(status == 202, f"unlock {session}: HTTP {status} {body}")
    expect(len(body.get("command_id", "")) == 32, f"unlock {session}: no command id in {body}")
    got = await asyncio.wait_for(station.remote_starts.get(), TIMEOUT)
    expect(got[0] == connector and got[1] == session, f"remote start {got} for {session}")
    return got[2]


async def main(addr, token):
    operator = Operator(addr, token)

    # The operator API requires the token and validates bodies.
    status, _ = operator.request("GET", "/api/stations", token=False)
    expect(status == 401, f"the API without a token: HTTP {status}")
    status, body = operator.request("PUT", f"/api/stations/{STATION}", {"password": "short"})
    expect(status == 400 and "password" in body["error"], f"a short password: {status} {body}")
    status, body = operator.request("PUT", f"/api/stations/{STATION}", {"password": PASSWORD})
    expect(status == 201, f"registration: HTTP {status} {body}")

    # Who may connect.
    await expect_refused(addr, 401, "an unknown charge point", station="PY-CP-UNKNOWN")
    await expect_refused(addr, 401, "a wrong password", password="wrong-password-0001")
    await expect_refused(addr, 401, "no credentials", auth=False)
    await expect_refused(addr, 400, "no ocpp1.6 subprotocol", subprotocols=("ocpp2.0.1",))

    async with connect(addr) as ws:
        expect(ws.subprotocol == "ocpp1.6", f"subprotocol {ws.subprotocol}")
        station = Station(STATION, ws, response_timeout=TIMEOUT)
        listener = asyncio.create_task(station.start())

        boot = await station.call(
            call.BootNotification(charge_point_model="Interop-1", charge_point_vendor="PyPI-ocpp")
        )
        expect(boot.status == "Accepted" and boot.interval > 0, f"boot {boot}")
        heartbeat = await station.call(call.Heartbeat())
        expect(heartbeat.current_time, f"heartbeat {heartbeat}")
        for connector in (0, 1, 2):
            await station.call(
                call.StatusNotification(
                    connector_id=connector, error_code="NoError", status="Available", timestamp=now()
                )
            )

        # A remote start the station accepts, then the transaction it starts.
        verdict = await remote_start(operator, station, 1, "interop-yes")
        expect(verdict == RemoteStartStopStatus.accepted, f"connector 1: {verdict}")
        await operator.wait_for_event("station", "UnlockAccepted")
        # With AuthorizeRemoteTxRequests on, a station authorizes the idTag first.
        authorized = await station.call(call.Authorize(id_tag="interop-yes"))
        expect(authorized.id_tag_info["status"] == "Accepted", f"authorize {authorized}")
        stranger = await station.call(call.Authorize(id_tag="not-issued"))
        expect(stranger.id_tag_info["status"] == "Invalid", f"authorize a stranger {stranger}")
        await station.call(
            call.StatusNotification(connector_id=1, error_code="NoError", status="Preparing", timestamp=now())
        )
        started = await station.call(
            call.StartTransaction(connector_id=1, id_tag="interop-yes", meter_start=0, timestamp=now())
        )
        expect(started.transaction_id > 0, f"transaction {started}")
        expect(started.id_tag_info["status"] == "Accepted", f"idTagInfo {started.id_tag_info}")
        await station.call(
            call.StatusNotification(connector_id=1, error_code="NoError", status="Charging", timestamp=now())
        )
        await station.call(
            call.MeterValues(
                connector_id=1,
                transaction_id=started.transaction_id,
                meter_value=[{"timestamp": now(), "sampledValue": [{"value": "600"}]}],
            )
        )
        vendor = await station.call(call.DataTransfer(vendor_id="org.example.interop"))
        expect(vendor.status == "UnknownVendorId", f"data transfer {vendor}")

        # A remote start the station rejects.
        verdict = await remote_start(operator, station, 2, "interop-no")
        expect(verdict == RemoteStartStopStatus.rejected, f"connector 2: {verdict}")
        await operator.wait_for_event("station", "UnlockRejected")

        # A newer connection of the same charge point replaces this one.
        async with connect(addr) as newer:
            try:
                await asyncio.wait_for(listener, TIMEOUT)
                fail("the older connection ended without a close")
            except websockets.exceptions.ConnectionClosed as closed:
                code = closed.rcvd.code if closed.rcvd else None
                expect(code == 1008, f"the replaced connection closed with {code}")
            replacement = Station(STATION, newer, response_timeout=TIMEOUT)
            replacing = asyncio.create_task(replacement.start())
            heartbeat = await replacement.call(call.Heartbeat())
            expect(heartbeat.current_time, "heartbeat on the newer connection")
            replacing.cancel()

    await operator.wait_for_event("telemetry", "Disconnected")

    # Reconnect: the boot is remembered; the station goes on where it was.
    async with connect(addr) as ws:
        station = Station(STATION, ws, response_timeout=TIMEOUT)
        listener = asyncio.create_task(station.start())
        heartbeat = await station.call(call.Heartbeat())
        expect(heartbeat.current_time, "heartbeat after reconnecting")
        status, view = operator.request("GET", f"/api/stations/{STATION}")
        expect(status == 200 and view["online"], f"station after reconnecting: {status} {view}")
        expect(view["connectors"]["1"]["status"] == "Charging", f"connector 1: {view['connectors']}")
        stopped = await station.call(
            call.StopTransaction(
                meter_stop=1200, timestamp=now(), transaction_id=started.transaction_id, id_tag="interop-yes"
            )
        )
        expect(stopped.id_tag_info["status"] == "Accepted", f"stop {stopped}")
        listener.cancel()

    print("interop: ok")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    asyncio.run(main(sys.argv[1], sys.argv[2]))
