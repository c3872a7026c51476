#!/usr/bin/env python3
"""An independent OCPP 1.6J charge point for the hub's integration tests (tests/ocpp_peer.rs).

Built on mobilityhouse's `ocpp` package (2.1.0) and `websockets` (17.4), not on anything of the
hub's: the library writes the charge point's requests, checks the hub's answers and commands
against the OCPP 1.6 JSON schemas, and answers the hub's calls from its `@on` handlers.

    python3 tests/peers/ocpp_cp.py --url ws://127.0.0.1:PORT/ocpp --cp CP001 SCENARIO [options]

Scenarios (each step it takes and each thing it hears is one JSON line on stdout, `{"step": …}`;
the last line is `{"step": "done"}`, or `{"step": "error", "message": …}` with exit status 1 when
something was not as the scenario expects; exit status 3 when its packages are missing):

  connect-only  open the connection and report the handshake's HTTP status
                (`--expect-status 404|401|400|101`); with 101, a Heartbeat proves the way in
  session       boot, status, authorize, start, meter values (units "Celsius" and "Celcius"),
                DataTransfer, stop, heartbeat
  start         boot, status, start a transaction, one meter value; `--hold` then stays silent
                (no messages, no pings) until the hub closes the connection or the test kills it
  resume        a charger coming back after a lost connection (no boot): status, meter values of
                `--transaction-id`; `--drop` loses the socket once more and reconnects at once,
                `--overlap` connects anew while the old connection is still open (the hub must
                close the old one); then stops the transaction
  heartbeat     connect, Heartbeat (`--boot` first: BootNotification); `--hold` as for start
  fault         Faulted/HighTemperature, OtherError, charger-level GroundFailure, then NoError
  authorize     Authorize each `--id-tag`; `--start-with TAG` starts (and stops) a transaction
  malformed     raw frames on a plain websockets connection: each broken CALL must get its
                CALLERROR, garbage no answer, and a Heartbeat afterwards its answer
  serve         boot, then answer the hub's commands as `--answer ACTION=STATUS[,STATUS…]` says
                (in turn; the last one repeats); STATUS may be `callerror[:Code]` (the handler
                raises the ocpp exception of that code) or `silent` (answers too late)

`--interactive` makes the scenario stop at its check points with `{"step": "paused", "at": …}`
until a line arrives on stdin, so that the test can look at the hub in between. In `serve`, a
line `quit` on stdin (or its end) closes the connection and ends the peer.
"""

import argparse
import asyncio
import base64
import json
import logging
import sys
import threading
import time
from datetime import datetime, timezone

PINS = {"ocpp": "2.1.0", "websockets": "17.4"}
INSTALL = "install the test peers with ./scripts/test (or: pip install -r tests/peers/requirements.txt)"


def emit(step, **fields):
    print(json.dumps({"step": step, **fields}, default=str), flush=True)


class Unexpected(Exception):
    """An outcome the scenario did not expect: the peer exits with status 1."""


try:
    import importlib.metadata as metadata

    import ocpp.exceptions
    from ocpp.messages import CallError, CallResult, MessageType, unpack, validate_payload
    from ocpp.routing import on
    from ocpp.v16 import ChargePoint as Cp
    from ocpp.v16 import call, call_result
    from ocpp.v16.enums import Action
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed, InvalidStatus
except ImportError as e:
    emit("error", message=f"the OCPP test peer cannot start: {e}; {INSTALL}")
    sys.exit(3)

for _package, _want in PINS.items():
    _have = metadata.version(_package)
    if _have != _want:
        emit("error", message=f"the OCPP test peer needs {_package}=={_want}, found {_have}; {INSTALL}")
        sys.exit(3)

SUBPROTOCOL = "ocpp1.6"


class _OneLine(logging.Formatter):
    """The library's warnings on stderr, one line each: a handler raising an ocpp exception on
    purpose (a planned CALLERROR) is no traceback."""

    def format(self, record):
        record.exc_info = None
        record.exc_text = None
        return super().format(record)


_handler = logging.StreamHandler(sys.stderr)
_handler.setFormatter(_OneLine("ocpp_cp.py: %(name)s: %(message)s"))
logging.getLogger("ocpp").addHandler(_handler)
logging.getLogger("ocpp").setLevel(logging.WARNING)
logging.getLogger("ocpp").propagate = False

# What the session scenario meters (the test expects exactly these values).
METER_IDLE_CONNECTOR2_WH = 5000


def now():
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def expect(what, got, want):
    if got != want:
        raise Unexpected(f"{what}: got {got!r}, want {want!r}")


def sv(value, measurand, unit=None, **extra):
    """One sampledValue, as a charger writes it (values are strings in OCPP 1.6)."""
    out = {"value": str(value), "measurand": measurand, "context": "Sample.Periodic"}
    if unit is not None:
        out["unit"] = unit
    out.update(extra)
    return out


class Stdin:
    """Lines from stdin, read by a daemon thread (which never holds up the exit)."""

    def __init__(self, loop):
        self.queue = asyncio.Queue()

        def pump():
            for line in sys.stdin:
                loop.call_soon_threadsafe(self.queue.put_nowait, line.strip())
            loop.call_soon_threadsafe(self.queue.put_nowait, None)

        threading.Thread(target=pump, daemon=True).start()

    async def line(self):
        return await self.queue.get()


class Peer:
    def __init__(self, args):
        self.args = args
        self.stdin = None

    async def pause(self, at):
        if not self.args.interactive:
            return
        emit("paused", at=at)
        if self.stdin is None:
            self.stdin = Stdin(asyncio.get_running_loop())
        line = await self.stdin.line()
        if line is None:
            raise Unexpected(f"stdin ended while paused at {at!r}")

    def url(self):
        return f"{self.args.url.rstrip('/')}/{self.args.cp}"

    def headers(self):
        if self.args.password is None:
            return None
        user = self.args.user or self.args.cp
        user_pass = f"{user}:{self.args.password}".encode()
        return {"Authorization": "Basic " + base64.b64encode(user_pass).decode()}

    def open(self):
        """The handshake (an async context manager); raises InvalidStatus when refused."""
        return connect(
            self.url(),
            subprotocols=None if self.args.no_subprotocol else [SUBPROTOCOL],
            additional_headers=self.headers(),
            proxy=None,
            # Silence means silence: a charger that stops talking sends no pings either.
            ping_interval=None,
            open_timeout=10,
            close_timeout=2,
        )


class ChargePoint(Cp):
    """The library's charge point, answering the hub's commands as the test says."""

    def __init__(self, cp_id, ws, answers, silent_for):
        super().__init__(cp_id, ws, response_timeout=10)
        self.answers = answers
        self.silent_for = silent_for

    async def answer(self, action, payload, result):
        plan = self.answers.get(action, [])
        status = plan.pop(0) if len(plan) > 1 else (plan[0] if plan else None)
        if status is None:
            emit("received", action=action, payload=payload, answer="no plan")
            raise Unexpected(f"the hub sent {action} {payload}, which the test did not plan for")
        emit("received", action=action, payload=payload, answer=status)
        if status.startswith("callerror"):
            code = status.partition(":")[2] or "GenericError"
            errors = {e.code: e for e in ocpp.exceptions.OCPPError.__subclasses__()}
            raise errors[code](description=f"{action} refused by the test charger")
        if status == "silent":
            await asyncio.sleep(self.silent_for)
            status = {"UnlockConnector": "UnlockFailed"}.get(action, "Rejected")
        return result(status=status)

    @on(Action.remote_stop_transaction)
    async def on_remote_stop(self, transaction_id, **_):
        return await self.answer(
            "RemoteStopTransaction", {"transactionId": transaction_id}, call_result.RemoteStopTransaction
        )

    @on(Action.reset)
    async def on_reset(self, type, **_):
        return await self.answer("Reset", {"type": type}, call_result.Reset)

    @on(Action.unlock_connector)
    async def on_unlock(self, connector_id, **_):
        return await self.answer("UnlockConnector", {"connectorId": connector_id}, call_result.UnlockConnector)

    @on(Action.change_availability)
    async def on_change_availability(self, connector_id, type, **_):
        return await self.answer(
            "ChangeAvailability", {"connectorId": connector_id, "type": type}, call_result.ChangeAvailability
        )


class Session:
    """An open connection with the library's charge point running its receive loop."""

    def __init__(self, peer, ws, answers=None):
        self.peer = peer
        self.ws = ws
        self.cp = ChargePoint(peer.args.cp, ws, answers or {}, peer.args.silent_for)
        self.loop = asyncio.create_task(self.cp.start())

    async def call(self, payload):
        if self.loop.done():
            raise Unexpected(f"the connection is gone before {type(payload).__name__}: {self.loop.exception()!r}")
        # suppress=False: a CALLERROR from the hub raises instead of passing silently.
        return await self.cp.call(payload, suppress=False)

    async def boot(self):
        conf = await self.call(
            call.BootNotification(
                charge_point_vendor="ParkhubTest",
                charge_point_model="PH-AC7-2",
                charge_point_serial_number="SN-0001",
                firmware_version="1.2.3",
            )
        )
        emit("boot", status=conf.status, interval=conf.interval, current_time=conf.current_time)
        expect("BootNotification status", conf.status, "Accepted")
        return conf

    async def status(self, connector, status, error_code="NoError", **extra):
        await self.call(
            call.StatusNotification(
                connector_id=connector, error_code=error_code, status=status, timestamp=now(), **extra
            )
        )
        emit("status", connector=connector, status=status, error_code=error_code)

    async def meter(self, connector, sampled, transaction_id=None):
        await self.call(
            call.MeterValues(
                connector_id=connector,
                transaction_id=transaction_id,
                meter_value=[{"timestamp": now(), "sampledValue": sampled}],
            )
        )
        emit("meter", connector=connector, transaction_id=transaction_id, sampled=sampled)

    async def heartbeat(self):
        conf = await self.call(call.Heartbeat())
        emit("heartbeat", current_time=conf.current_time)
        return conf

    async def start(self, connector, id_tag, meter_start):
        conf = await self.call(
            call.StartTransaction(connector_id=connector, id_tag=id_tag, meter_start=meter_start, timestamp=now())
        )
        emit(
            "start",
            connector=connector,
            id_tag=id_tag,
            transaction_id=conf.transaction_id,
            id_tag_status=conf.id_tag_info["status"],
        )
        return conf

    async def stop(self, transaction_id, meter_stop, reason, id_tag=None):
        conf = await self.call(
            call.StopTransaction(
                meter_stop=meter_stop, timestamp=now(), transaction_id=transaction_id, reason=reason, id_tag=id_tag
            )
        )
        info = conf.id_tag_info or {}
        emit("stop", transaction_id=transaction_id, meter_stop=meter_stop, id_tag_status=info.get("status"))
        return conf

    async def hold(self, max_silence):
        """Says nothing until the hub closes the connection."""
        emit("holding")
        started = time.monotonic()
        try:
            await asyncio.wait_for(asyncio.shield(self.loop), max_silence)
        except asyncio.TimeoutError:
            raise Unexpected(f"the hub kept a silent connection open for {max_silence} s")
        except ConnectionClosed:
            pass
        emit("closed", by="hub", after_s=round(time.monotonic() - started, 1))

    async def close(self):
        self.loop.cancel()
        await self.ws.close()


async def connect_only(peer):
    args = peer.args
    try:
        async with peer.open() as ws:
            emit("handshake", status=101, subprotocol=ws.subprotocol)
            expect("handshake status", 101, args.expect_status)
            expect("subprotocol", ws.subprotocol, SUBPROTOCOL)
            s = Session(peer, ws)
            await s.heartbeat()
            await s.close()
    except InvalidStatus as e:
        status = e.response.status_code
        emit("handshake", status=status, body=e.response.body.decode(errors="replace"))
        expect("handshake status", status, args.expect_status)


async def session(peer):
    args = peer.args
    c, tag = args.connector, args.id_tag
    async with peer.open() as ws:
        s = Session(peer, ws)
        await s.boot()
        for n in range(args.connectors + 1):
            await s.status(n, "Available")
        # The idle connector's meter, so that the charger's total is known.
        other = 2 if c == 1 else 1
        await s.meter(other, [sv(METER_IDLE_CONNECTOR2_WH, "Energy.Active.Import.Register", "Wh")])
        await peer.pause("booted")
        conf = await s.call(call.Authorize(id_tag=tag))
        emit("authorize", id_tag=tag, status=conf.id_tag_info["status"])
        expect("Authorize status", conf.id_tag_info["status"], "Accepted")
        await s.status(c, "Preparing")
        tx = (await s.start(c, tag, args.meter_start)).transaction_id
        await s.status(c, "Charging")
        await peer.pause("started")
        await s.meter(
            c,
            [
                sv(args.meter_start + 2500, "Energy.Active.Import.Register", "Wh"),
                sv(7200, "Power.Active.Import", "W"),
                sv(31.3, "Current.Import", "A", phase="L1"),
                sv(230.1, "Voltage", "V", phase="L1-N"),
                sv(35.5, "Temperature", "Celsius"),
                sv(40, "SoC", "Percent"),
            ],
            tx,
        )
        await peer.pause("metered-celsius")
        await s.meter(
            c,
            [
                sv((args.meter_start + 5000) / 1000, "Energy.Active.Import.Register", "kWh"),
                sv(7.0, "Power.Active.Import", "kW"),
                # The misspelling of OCPP 1.6's own schema, which chargers send.
                sv(36.5, "Temperature", "Celcius"),
                sv(55, "SoC", "Percent"),
            ],
            tx,
        )
        await peer.pause("metered-celcius")
        conf = await s.call(call.DataTransfer(vendor_id="com.example.parkhub-test", message_id="hello", data="{}"))
        emit("data_transfer", status=conf.status)
        expect("DataTransfer status", conf.status, "UnknownVendorId")
        conf = await s.stop(tx, args.meter_start + 5250, "EVDisconnected", tag)
        expect("StopTransaction idTagInfo", (conf.id_tag_info or {}).get("status"), "Accepted")
        await s.status(c, "Finishing")
        await s.status(c, "Available")
        await s.heartbeat()
        await peer.pause("stopped")
        await s.close()


async def start(peer):
    args = peer.args
    c = args.connector
    async with peer.open() as ws:
        s = Session(peer, ws)
        await s.boot()
        await s.status(c, "Preparing")
        tx = (await s.start(c, args.id_tag, args.meter_start)).transaction_id
        await s.status(c, "Charging")
        await s.meter(c, [sv(args.meter_start + 1000, "Energy.Active.Import.Register", "Wh")], tx)
        if args.hold:
            await s.hold(args.max_silence)
        else:
            await s.close()


async def resume(peer):
    args = peer.args
    c, tx = args.connector, args.transaction_id
    if tx is None:
        raise Unexpected("resume needs --transaction-id")
    s = Session(peer, await peer.open())
    await s.status(c, "Charging")
    await s.meter(c, [sv(args.meter, "Energy.Active.Import.Register", "Wh")], tx)
    if args.drop:
        # Lost without a goodbye: no close frame, the TCP connection just ends.
        s.ws.transport.abort()
        s.loop.cancel()
        emit("dropped")
        s = Session(peer, await peer.open())
        emit("reconnected")
        await s.meter(c, [sv(args.meter + 250, "Energy.Active.Import.Register", "Wh")], tx)
    if args.overlap:
        # A new connection while the old one still looks open (as after a half-open TCP
        # connection): the hub must take the new one and close the old.
        old = s
        s = Session(peer, await peer.open())
        emit("overlapped")
        started = time.monotonic()
        try:
            await asyncio.wait_for(asyncio.shield(old.loop), 5)
        except asyncio.TimeoutError:
            raise Unexpected("the hub kept the old connection open beside the new one")
        except ConnectionClosed:
            pass
        emit("replaced", after_s=round(time.monotonic() - started, 2))
    await s.meter(c, [sv(args.meter + 500, "Energy.Active.Import.Register", "Wh")], tx)
    await peer.pause("resumed")
    await s.stop(tx, args.meter_stop, "Local", args.id_tag)
    await s.status(c, "Available")
    await s.close()


async def heartbeat(peer):
    async with peer.open() as ws:
        s = Session(peer, ws)
        if peer.args.boot:
            await s.boot()
        await s.heartbeat()
        if peer.args.hold:
            await s.hold(peer.args.max_silence)
        else:
            await s.close()


async def fault(peer):
    async with peer.open() as ws:
        s = Session(peer, ws)
        await s.boot()
        for n in range(peer.args.connectors + 1):
            await s.status(n, "Available")
        await peer.pause("booted")
        await s.status(1, "Faulted", "HighTemperature", info="gun at 92 C", vendor_error_code="E-OT-01")
        await peer.pause("hazard")
        await s.status(2, "Available", "OtherError", info="cable holder door open")
        await s.status(0, "Faulted", "GroundFailure")
        await peer.pause("errors")
        for n in range(peer.args.connectors + 1):
            await s.status(n, "Available", "NoError")
        await peer.pause("cleared")
        await s.close()


async def authorize(peer):
    args = peer.args
    async with peer.open() as ws:
        s = Session(peer, ws)
        await s.boot()
        for tag in args.id_tag_list:
            conf = await s.call(call.Authorize(id_tag=tag))
            emit("authorize", id_tag=tag, status=conf.id_tag_info["status"])
        if args.start_with:
            conf = await s.start(args.connector, args.start_with, args.meter_start)
            if conf.id_tag_info["status"] != "Accepted":
                # What a charger does with StopTransactionOnInvalidId: stop at once.
                await s.stop(conf.transaction_id, args.meter_start, "DeAuthorized", args.start_with)
        await s.close()


async def serve(peer):
    answers = {}
    for a in peer.args.answer:
        action, _, statuses = a.partition("=")
        answers[action] = statuses.split(",")
    peer.stdin = Stdin(asyncio.get_running_loop())
    async with peer.open() as ws:
        s = Session(peer, ws, answers)
        await s.boot()
        await s.status(0, "Available")
        emit("ready")
        quit_ = asyncio.create_task(peer.stdin.line())
        done, _ = await asyncio.wait({quit_, s.loop}, return_when=asyncio.FIRST_COMPLETED)
        if s.loop in done:
            error = s.loop.exception()
            raise Unexpected(f"the connection ended while serving: {error!r}")
        await s.close()
        emit("closed", by="peer")


# ---- malformed frames, on a raw connection ----

# (name, frame, answer): answer is "result" (a CALLRESULT of that action, schema-checked), a
# CALLERROR code, or None (OCPP-J: nothing to answer). The message id of an answered frame is its
# second element.
MALFORMED = [
    ("boot", '[2,"boot-1","BootNotification",{"chargePointVendor":"ParkhubTest","chargePointModel":"Raw"}]', "result"),
    ("unknown action", '[2,"m-unknown","FlyToTheMoon",{}]', "NotImplemented"),
    ("central system's action", '[2,"m-wrongway","DiagnosticsStatusNotification",{"status":"Idle"}]', "NotSupported"),
    ("missing field", '[2,"m-missing","BootNotification",{"chargePointVendor":"ParkhubTest"}]', "OccurenceConstraintViolation"),
    ("null field", '[2,"m-null","Authorize",{"idTag":null}]', "OccurenceConstraintViolation"),
    ("wrong type", '[2,"m-type","StatusNotification",{"connectorId":"one","errorCode":"NoError","status":"Available"}]', "TypeConstraintViolation"),
    ("fraction for an integer", '[2,"m-frac","StartTransaction",{"connectorId":1.5,"idTag":"A","meterStart":0,"timestamp":"2025-01-01T00:00:00Z"}]', "TypeConstraintViolation"),
    ("value outside the enumeration", '[2,"m-enum","StatusNotification",{"connectorId":1,"errorCode":"NoError","status":"Sleeping"}]', "PropertyConstraintViolation"),
    ("id tag too long", '[2,"m-long","Authorize",{"idTag":"ABCDEFGHIJKLMNOPQRSTU"}]', "PropertyConstraintViolation"),
    ("no date-time", '[2,"m-ts","StartTransaction",{"connectorId":1,"idTag":"A","meterStart":0,"timestamp":"yesterday"}]', "PropertyConstraintViolation"),
    ("five elements", '[2,"m-extra","Heartbeat",{},"extra"]', "FormationViolation"),
    ("payload not an object", '[2,"m-array","Heartbeat",[]]', "FormationViolation"),
    ("action not a string", '[2,"m-action",42,{}]', "FormationViolation"),
    ("message id too long", '[2,"' + "x" * 37 + '","Heartbeat",{}]', "FormationViolation"),
    ("three elements", '[2,"m-short","Heartbeat"]', "ProtocolError"),
    ("data transfer", '[2,"m-dt","DataTransfer",{"vendorId":"com.example.parkhub-test"}]', "result"),
    ("not JSON", "this is not json at all", None),
    ("truncated JSON", '[2,"m-trunc","Heartbeat",{', None),
    ("an object", '{"messageTypeId":2,"action":"Heartbeat"}', None),
    ("empty array", "[]", None),
    ("unknown message type", '[9,"m-nine",{}]', None),
    ("no message id", "[2]", None),
    ("numeric message id", '[2,17,"Heartbeat",{}]', None),
    ("reply to no call", '[3,"nobody-asked",{}]', None),
    ("error for no call", '[4,"nobody-asked","GenericError","",{}]', None),
    ("binary frame", b"\x02\x00\xff", None),
]


async def recv_json(ws, timeout):
    text = await asyncio.wait_for(ws.recv(), timeout)
    return text, json.loads(text)


async def malformed(peer):
    timeout = peer.args.timeout
    results = []
    async with peer.open() as ws:
        expect("subprotocol", ws.subprotocol, SUBPROTOCOL)
        for i, (name, frame, want) in enumerate(MALFORMED):
            await ws.send(frame)
            # A Heartbeat after each: the connection still works, and whatever arrives before its
            # answer is the answer to the frame (the hub answers a connection's frames in order).
            probe = f"probe-{i}"
            await ws.send(json.dumps([2, probe, "Heartbeat", {}]))
            before = []
            while True:
                text, msg = await recv_json(ws, timeout)
                if isinstance(msg, list) and len(msg) >= 2 and msg[1] == probe:
                    probe_answer = unpack(text)
                    if probe_answer.message_type_id != MessageType.CallResult:
                        raise Unexpected(f"{name}: the Heartbeat after it got {text}")
                    probe_answer.action = "Heartbeat"
                    await validate_payload(probe_answer, "1.6")
                    break
                before.append(text)
            got = None
            if before:
                if len(before) > 1:
                    raise Unexpected(f"{name}: {len(before)} answers: {before}")
                answer = unpack(before[0])
                sent_id = json.loads(frame)[1] if isinstance(frame, str) and want else None
                expect(f"{name}: message id of the answer", answer.unique_id, sent_id)
                if isinstance(answer, CallError):
                    # The library's own table of OCPP error codes: an unknown one raises.
                    answer.to_exception()
                    got = answer.error_code
                    emit("answer", case=name, sent=_printable(frame), code=got, description=answer.error_description)
                elif isinstance(answer, CallResult):
                    answer.action = json.loads(frame)[2]
                    await validate_payload(answer, "1.6")
                    got = "result"
                    emit("answer", case=name, sent=_printable(frame), result=answer.payload)
                else:
                    raise Unexpected(f"{name}: the hub answered with a CALL: {before[0]}")
            else:
                emit("answer", case=name, sent=_printable(frame), code=None)
            results.append((name, got, want))
        emit("connection", open=True, probes=len(MALFORMED))
    wrong = [f"{n}: got {g}, want {w}" for n, g, w in results if g != w]
    if wrong:
        raise Unexpected("; ".join(wrong))


def _printable(frame):
    return frame if isinstance(frame, str) else "binary " + frame.hex()


SCENARIOS = {
    "connect-only": connect_only,
    "session": session,
    "start": start,
    "resume": resume,
    "heartbeat": heartbeat,
    "fault": fault,
    "authorize": authorize,
    "malformed": malformed,
    "serve": serve,
}


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("scenario", choices=sorted(SCENARIOS))
    p.add_argument("--url", required=True, help="the central system's endpoint, e.g. ws://127.0.0.1:8080/ocpp")
    p.add_argument("--cp", default="CP001", help="the charge point id (appended to --url)")
    p.add_argument("--password", help="HTTP Basic auth password")
    p.add_argument("--user", help="HTTP Basic auth user (default: the charge point id)")
    p.add_argument("--no-subprotocol", action="store_true", help="offer no ocpp1.6 subprotocol")
    p.add_argument("--expect-status", type=int, default=101, help="connect-only: the handshake's HTTP status")
    p.add_argument("--interactive", action="store_true", help="stop at check points until stdin has a line")
    p.add_argument("--connectors", type=int, default=2)
    p.add_argument("--connector", type=int, default=1)
    p.add_argument("--id-tag", dest="id_tag_list", action="append", default=[], help="repeatable for authorize")
    p.add_argument("--start-with", help="authorize: start a transaction with this id tag")
    p.add_argument("--meter-start", type=int, default=10000, help="Wh")
    p.add_argument("--meter", type=int, default=0, help="resume: the register (Wh) when back")
    p.add_argument("--meter-stop", type=int, default=0, help="resume: the register (Wh) at the stop")
    p.add_argument("--transaction-id", type=int)
    p.add_argument("--drop", action="store_true", help="resume: lose the socket once and reconnect")
    p.add_argument("--overlap", action="store_true", help="resume: connect anew while the old connection is open")
    p.add_argument("--boot", action="store_true", help="heartbeat: BootNotification first")
    p.add_argument("--hold", action="store_true", help="stay connected and silent until the hub closes")
    p.add_argument("--max-silence", type=float, default=30.0)
    p.add_argument("--answer", action="append", default=[], help="serve: ACTION=STATUS[,STATUS…]")
    p.add_argument("--silent-for", type=float, default=3.0, help="serve: how late a `silent` answer comes")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for an answer")
    args = p.parse_args(argv)
    args.id_tag = args.id_tag_list[0] if args.id_tag_list else "CARD-0001"
    return args


async def main(argv):
    args = parse_args(argv)
    peer = Peer(args)
    try:
        await SCENARIOS[args.scenario](peer)
    except Unexpected as e:
        emit("error", message=str(e))
        return 1
    except ocpp.exceptions.OCPPError as e:
        emit("error", message=f"the hub answered with a CALLERROR: {e}")
        return 1
    except InvalidStatus as e:
        emit("error", message=f"the hub refused the connection: HTTP {e.response.status_code}")
        return 1
    except (ConnectionClosed, OSError, asyncio.TimeoutError) as e:
        emit("error", message=f"{type(e).__name__}: {e}")
        return 1
    emit("done")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
