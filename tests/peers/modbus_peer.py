#!/usr/bin/env python3
"""Independent Modbus server (pymodbus 3.16.1) used as a test peer for parkhub.

Usage:
  modbus_peer.py --map MAP.json --tcp-port N [--framer socket|rtu] [--count-file PATH]
  modbus_peer.py --map MAP.json --serial DEV [--baud 9600] [--parity N|E|O]
                 [--stopbits 1|2] [--count-file PATH]        (add -v for debug logs)

TCP binds 127.0.0.1 (port 0 = pick a free port); --framer rtu serves RTU frames
over TCP. --serial serves Modbus RTU on DEV (e.g. one end of a socat pty pair).
Once listening, prints exactly one line "READY <port>" (serial: "READY 0") to
stdout; logs go to stderr. Runs until SIGTERM/SIGINT (exit 0). Invalid map:
exit 2; cannot listen/open: exit 1.

MAP.json: {"units": [{"unit": 1, "behaviour": "normal", "points": [...]},
                     {"unit": 2, "behaviour": "silent"},
                     {"unit": 3, "behaviour": "exception", "exception": 4}]}
Unlisted units never answer. Point: {"function": coil|discrete|holding|input,
"address": A, "type": T, "order": ABCD|CDAB|BADC|DCBA, "value": V}; T is one of
u16 i16 u32 i32 u64 i64 f32 f64 bcd string bool ("length" in registers for
bcd/string; "bit": n for a bool in a register). Unset addresses read 0.
--count-file PATH is atomically rewritten with {"requests": N} per request.
"""

import argparse
import asyncio
import json
import logging
import math
import os
import signal
import struct
import sys

from pymodbus.exceptions import ModbusIOException
from pymodbus.framer import FramerType
from pymodbus.pdu import ExceptionResponse
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.server.requesthandler import ServerRequestHandler
from pymodbus.simulator import DataType, SimData, SimDevice
from pymodbus.transaction import TransactionManager

log = logging.getLogger("modbus_peer")
NUMERIC = {"u16": "H", "i16": "h", "u32": "I", "i32": "i",
           "u64": "Q", "i64": "q", "f32": "f", "f64": "d"}
TABLES = {"coil": "co", "discrete": "di", "holding": "hr", "input": "ir"}


class MapError(Exception):
    """Invalid MAP.json content."""


def to_regs(raw):
    return [int.from_bytes(raw[i:i + 2], "big") for i in range(0, len(raw), 2)]


def apply_order(regs, order, words=True):
    """Reverse register order (CDAB/DCBA, if `words`); swap bytes (BADC/DCBA)."""
    if order not in ("ABCD", "CDAB", "BADC", "DCBA"):
        raise MapError(f"unknown order {order!r}")
    if words and order in ("CDAB", "DCBA"):
        regs = regs[::-1]
    if order in ("BADC", "DCBA"):
        regs = [((r & 0xFF) << 8) | (r >> 8) for r in regs]
    return regs


def to_int(value):
    """Integer value; floats round to nearest, halves away from zero."""
    if isinstance(value, float) and math.isfinite(value):
        return int(math.copysign(math.floor(abs(value) + 0.5), value))
    if not isinstance(value, int):
        raise MapError(f"{value!r} is not a finite number")
    return int(value)


def encode_registers(ptype, value, order, length):
    """Registers (after `order`) for a non-bool register point."""
    if ptype in NUMERIC:
        fmt = NUMERIC[ptype]
        try:
            raw = struct.pack(">" + fmt, float(value) if fmt in "fd" else to_int(value))
        except (struct.error, OverflowError) as exc:
            raise MapError(f"value out of range for {ptype}: {exc}") from exc
        return apply_order(to_regs(raw), order)
    if ptype == "bcd":
        length, num = length or 1, to_int(value)
        if not 0 <= num < 10 ** (4 * length):
            raise MapError(f"bcd value does not fit {length} register(s)")
        return apply_order(to_regs(bytes.fromhex(str(num).zfill(4 * length))), order)
    if ptype == "string":
        try:
            raw = str(value).encode("ascii")
        except UnicodeEncodeError as exc:
            raise MapError("string is not ASCII") from exc
        length = length or (len(raw) + 1) // 2
        if len(raw) > 2 * length:
            raise MapError(f"string does not fit {length} register(s)")
        return apply_order(to_regs(raw.ljust(2 * length, b"\0")), order, words=False)
    raise MapError(f"unknown type {ptype!r}")


def build_tables(points):
    """The four full-size (65536 entries) tables of one unit."""
    tables = {"co": [False] * 65536, "di": [False] * 65536, "hr": [0] * 65536, "ir": [0] * 65536}
    for pt in points:
        try:
            table, addr, value = TABLES[pt["function"]], int(pt["address"]), pt["value"]
            ptype = pt.get("type", "bool" if table in ("co", "di") else "u16")
            if table in ("co", "di") and ptype != "bool":
                raise MapError(f"type {ptype!r} not allowed on {pt['function']}")
            if ptype == "bool" and "bit" in pt:
                bit = int(pt["bit"])
                if not (0 <= bit <= 15 and 0 <= addr <= 65535):
                    raise MapError("bit or address out of range")
                tables[table][addr] |= (1 << bit) if value else 0
                continue
            if ptype == "bool":
                regs = [bool(value)] if table in ("co", "di") else [1 if value else 0]
            else:
                length = int(pt.get("length", 0))
                if length < 0:
                    raise MapError("negative length")
                regs = encode_registers(ptype, value, pt.get("order", "ABCD"), length)
            if not 0 <= addr <= 65536 - len(regs):
                raise MapError(f"address {addr} (+{len(regs)}) outside 0..65535")
            tables[table][addr:addr + len(regs)] = regs
        except KeyError as exc:
            raise MapError(f"point {pt}: missing or unknown {exc}") from exc
        except (MapError, TypeError, ValueError) as exc:
            raise MapError(f"point {pt}: {exc}") from exc
    return tables


def load_map(path):
    """Return ({unit: (behaviour, exception_code)}, [SimDevice per normal unit])."""
    with open(path, encoding="utf-8") as fh:
        doc = json.load(fh)
    units, devices = {}, []
    for entry in doc["units"]:
        unit, behaviour = int(entry["unit"]), entry.get("behaviour", "normal")
        code = int(entry.get("exception", 4))
        if not 0 <= unit <= 255 or unit in units or not 1 <= code <= 255:
            raise MapError(f"unit {unit}: bad or duplicate unit id, or bad exception code")
        if behaviour not in ("normal", "silent", "exception"):
            raise MapError(f"unit {unit}: unknown behaviour {behaviour!r}")
        units[unit] = (behaviour, code)
        if behaviour == "normal":
            t = build_tables(entry.get("points", []))
            devices.append(SimDevice(unit, simdata=(  # non-shared blocks: co, di, hr, ir
                [SimData(0, values=t["co"], datatype=DataType.BITS)],
                [SimData(0, values=t["di"], datatype=DataType.BITS)],
                [SimData(0, values=t["hr"], datatype=DataType.REGISTERS)],
                [SimData(0, values=t["ir"], datatype=DataType.REGISTERS)])))
    return units, devices


class PeerHandler(ServerRequestHandler):
    """Per-connection handler replacing the stock 3.16.1 request dispatch.

    The stock handler keeps only `last_pdu` and decodes one frame per read, so
    back-to-back requests get lost; it also answers unknown unit ids with
    exception 4 even with ignore_missing_devices=True."""

    def callback_data(self, data, addr=None):
        used = 0
        while used < len(data):
            try:
                n = TransactionManager.callback_data(self, data[used:], addr)
                pdu = self.last_pdu
                request = pdu and (pdu.dev_id, pdu.transaction_id, pdu.function_code, pdu)
            except ModbusIOException:  # well-framed but undecodable PDU
                n, dev_id, tid, frame = self.framer.decode(data[used:])
                fcode = frame[0] if frame else 0
                known = fcode in self.server.decoder.pdu_table  # e.g. count > 125
                request = (dev_id, tid, fcode, 3 if known else 1)
                log.warning("undecodable request %s (unit %d)", frame.hex(), dev_id)
            if request:
                self.server.peer_counter.hit()
                self.loop.create_task(self.answer(*request, addr))
            if not n:
                break
            used += n
        return used

    def send(self, data, addr=None):
        keep = self.recv_buffer  # stock send() drops a partially received next request
        super().send(data, addr)
        self.recv_buffer = keep

    async def answer(self, dev_id, tid, fcode, request, addr):
        """Respond to one request (`request` is a PDU or an exception code)."""
        behaviour, code = self.server.peer_units.get(dev_id, ("silent", 0))
        if behaviour == "silent":
            log.debug("unit %d is silent: not answering fc %d", dev_id, fcode)
            return
        if behaviour == "exception" or isinstance(request, int):
            response = ExceptionResponse(fcode, code if behaviour == "exception" else request)
        else:
            try:
                response = await request.datastore_update(self.server.context, dev_id)
            except Exception:  # pylint: disable=broad-except
                log.exception("datastore failed for %s", request)
                response = ExceptionResponse(fcode, 4)
        response.transaction_id, response.dev_id = tid, dev_id
        self.server_send(response, addr)


class RequestCounter:
    """Counts requests; atomically rewrites `path` with {"requests": N}."""

    def __init__(self, path):
        self.path, self.requests = path, 0
        self.hit(0)

    def hit(self, inc=1):
        self.requests += inc
        if self.path:
            tmp = f"{self.path}.tmp{os.getpid()}"
            with open(tmp, "w", encoding="utf-8") as fh:
                json.dump({"requests": self.requests}, fh)
            os.replace(tmp, self.path)


async def serve(args, units, devices):
    tcp = args.tcp_port is not None
    base = ModbusTcpServer if tcp else ModbusSerialServer
    cls = type("Peer" + base.__name__, (base,), {
        "peer_units": units,
        "peer_counter": RequestCounter(args.count_file),
        "callback_new_connection": lambda self: PeerHandler(self, None, None, None),
    })
    if tcp:
        server = cls(devices, framer=FramerType(args.framer), address=("127.0.0.1", args.tcp_port))
    else:
        server = cls(devices, framer=FramerType.RTU, port=args.serial, baudrate=args.baud,
                     bytesize=8, parity=args.parity, stopbits=args.stopbits)
    await server.serve_forever(background=True)  # returns once bound and listening
    port = server.transport.sockets[0].getsockname()[1] if tcp else 0
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    print(f"READY {port}", flush=True)
    log.info("serving units %s on %s", sorted(units), port or args.serial)
    await stop.wait()
    await server.shutdown()
    log.info("stopped")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--map", required=True)
    where = ap.add_mutually_exclusive_group(required=True)
    where.add_argument("--tcp-port", type=int)
    where.add_argument("--serial")
    ap.add_argument("--framer", choices=("socket", "rtu"), default="socket")
    ap.add_argument("--baud", type=int, default=9600)
    ap.add_argument("--parity", choices=("N", "E", "O"), default="N")
    ap.add_argument("--stopbits", type=int, choices=(1, 2), default=1)
    ap.add_argument("--count-file")
    ap.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = ap.parse_args()
    logging.basicConfig(stream=sys.stderr, level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if not args.verbose:
        logging.getLogger("pymodbus").setLevel(logging.WARNING)
    try:
        units, devices = load_map(args.map)
    except (OSError, ValueError, KeyError, TypeError, MapError) as exc:
        why = exc if isinstance(exc, MapError) else repr(exc)
        print(f"modbus_peer: invalid map {args.map}: {why}", file=sys.stderr)
        sys.exit(2)
    try:
        asyncio.run(serve(args, units, devices))
    except Exception as exc:  # pylint: disable=broad-except  # cannot listen / open device
        print(f"modbus_peer: cannot serve: {exc!r}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
