"""Measure how fast the simulator streams an LVM-size FETCH (a script, not a test).

    uv run --frozen python -m tests.simulator.fetch_throughput [--limit-bps 1e9] [--repeat 3]

The simulator runs in a child process (as ``ccdflow sim`` would) and this process
reads with a bare blocking socket that only counts bytes, so the figure is the
server's, not a Python client's.  The frame is LVM's: the reference ACF when it is
present, else an equivalent one (FRAMEMODE=2, 12 taps, 2040 x 2060) built here.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import multiprocessing as mp
import socket
import time
from pathlib import Path

from devices.archon.acf import AcfConfig, load_acf, parse_acf
from devices.archon.simulator import ArchonSimulator

LVM_ACF = Path(__file__).resolve().parents[3] / "shared" / "reference" / "lvm-100khz.acf"


def lvm_like_acf() -> AcfConfig:
    """The reference LVM ACF, or one with the same frame geometry."""
    if LVM_ACF.exists():
        return load_acf(LVM_ACF)
    taps = "\n".join(f'TAPLINE{i}="AD{i + 1}L, 1, 1000"' for i in range(12))
    params = ["Exposures=0", "IntCS=0", "ReadOut=0", "AbortExposure=0", "DoFlush=0"]
    params += ["AutoFlush=1", "Lines=2040", "Pixels=2040", "OverscanPixels=20", "WaitCount=0"]
    plines = "\n".join(f'PARAMETER{i}="{p}"' for i, p in enumerate(params))
    text = (
        "[CONFIG]\nFRAMEMODE=2\nSAMPLEMODE=0\nLINECOUNT=2040\nPIXELCOUNT=2060\n"
        f"TAPLINES=12\n{taps}\nPARAMETERS={len(params)}\n{plines}\n"
    )
    return parse_acf(text, source="lvm-like")


def _serve(port_queue: mp.Queue[int], limit_bps: float | None) -> None:
    async def main() -> None:
        sim = ArchonSimulator(lvm_like_acf(), pixel_rate_hz=50e6, bandwidth_limit_bps=limit_bps)
        async with sim:
            port_queue.put(sim.port)
            await asyncio.Event().wait()

    asyncio.run(main())


class _Link:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.file = self.sock.makefile("rb")

    def cmd(self, command: str) -> str:
        self.sock.sendall(f">01{command}\n".encode())
        reply = self.file.readline().decode()
        if not reply.startswith("<01"):
            raise RuntimeError(f"{command}: {reply!r}")
        return reply[3:-1]

    def frame(self) -> dict[str, str]:
        return dict(item.split("=", 1) for item in self.cmd("FRAME").split())


def _take_frame(link: _Link) -> tuple[int, int]:
    """Expose (bias) and wait for the frame; return (base, blocks) of its buffer."""
    for name, value in (("IntCS", 0), ("ReadOut", 1), ("Exposures", 1)):
        link.cmd(f"FASTLOADPARAM {name} {value}")
    link.cmd("RELEASETIMING")
    while True:
        frame = link.frame()
        n = frame["WBUF"]
        if frame[f"BUF{n}FRAME"] != "0" and frame[f"BUF{n}COMPLETE"] == "1":
            break
        time.sleep(0.05)
    width, height = int(frame[f"BUF{n}WIDTH"]), int(frame[f"BUF{n}HEIGHT"])
    bpp = 2 if frame[f"BUF{n}SAMPLE"] == "0" else 4
    return int(frame[f"BUF{n}BASE"]), math.ceil(width * height * bpp / 1024)


def _fetch_seconds(link: _Link, base: int, blocks: int) -> float:
    """Seconds from sending FETCH to the last byte, reading into one reused buffer."""
    expected = blocks * 1028
    sink = bytearray(4 << 20)
    view = memoryview(sink)
    start = time.perf_counter()
    link.sock.sendall(f">02FETCH{base:08X}{blocks:08X}\n".encode())
    got = 0
    while got < expected:
        n = link.sock.recv_into(view, min(len(sink), expected - got))
        if not n:
            raise RuntimeError(f"connection closed after {got} of {expected} bytes")
        got += n
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit-bps", type=float, default=None)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    ctx = mp.get_context("spawn")
    ports: mp.Queue[int] = ctx.Queue()
    server = ctx.Process(target=_serve, args=(ports, args.limit_bps), daemon=True)
    server.start()
    try:
        link = _Link(ports.get(timeout=60))
        base, blocks = _take_frame(link)
        wire_bytes = blocks * 1028
        for _ in range(args.repeat):
            seconds = _fetch_seconds(link, base, blocks)
            rate = wire_bytes / seconds
            line = f"{wire_bytes / 1e6:.1f} MB in {seconds:.3f} s = {rate / 1e6:.0f} MB/s"
            if args.limit_bps:
                line += f" = {100 * rate * 8 / args.limit_bps:.1f} % of the cap"
            print(line, flush=True)
    finally:
        server.terminate()
        server.join()


if __name__ == "__main__":
    main()
