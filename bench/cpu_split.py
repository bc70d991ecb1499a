"""Where the model server's CPU goes in one bench/serve.py cell, by thread and by kind, and the receive floor.

    PYTHONPATH=operator python bench/cpu_split.py [--body binary|json] [--clients 64] [--seconds 4] [--tree DIR]

Starts ``modelship serve`` (from ``--tree``, this checkout's operator/ by default) on bench/serve.py's MobileNetV2
int8, drives it with bench/serve.py's load generator at ``--clients`` connections, and over ``--seconds`` of the
steady state reads: the server's own invoke share (``modelship_invoke_cpu_seconds_total`` / process CPU), each
thread's CPU, run-queue wait and context switches per answered request (/proc/PID/task), read syscalls per request
(/proc/PID/io), and with ``perf`` (Debian's linux-perf; root) a cpu-clock profile with kernel stacks, each
sample put in one kind: the kernel's copy of the body to the server (``recv: copy to user``) and the rest of the TCP
receive, the answer's send, epoll, futex, context switches, interrupts, and by library in user space (TFLite, the
Python interpreter, uvloop, httptools, libmsjson, numpy, libc's memmove...). Python's own functions are not named
(Python 3.11 has no perf map); ``--spy`` samples with py-spy instead, by Python function.

Then the floor: the same body size sent over loopback by another process to a receiver doing nothing else than
``recv_into`` a preallocated buffer: the receiver's CPU per body is what any server on this machine pays to
receive it. Figures are printed, not appended: a run on a shared machine is one sample; see bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import collections
import multiprocessing as mp
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import serve as S  # noqa: E402

TaskStat = tuple[float, float, int, int]  # CPU s, run-queue wait s, voluntary and involuntary context switches


def tasks(pid: int) -> dict[int, TaskStat]:
    out: dict[int, TaskStat] = {}
    for t in os.listdir(f"/proc/{pid}/task"):
        try:
            st = Path(f"/proc/{pid}/task/{t}/schedstat").read_text().split()
            status = Path(f"/proc/{pid}/task/{t}/status").read_text()
        except OSError:
            continue
        vol = re.search(r"^voluntary_ctxt_switches:\s+(\d+)", status, re.M)
        inv = re.search(r"^nonvoluntary_ctxt_switches:\s+(\d+)", status, re.M)
        out[int(t)] = (int(st[0]) / 1e9, int(st[1]) / 1e9, int(vol[1]) if vol else 0, int(inv[1]) if inv else 0)
    return out


def read_syscalls(pid: int) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("syscr:"):
            return int(line.split()[1])
    return 0


def kind(stack: list[tuple[str, str]]) -> str:
    """One sample's kind, from its call chain (leaf first: (symbol, object))."""
    syms = [s for s, _ in stack]
    leaf, dso = stack[0]

    def has(*names: str) -> bool:
        return any(n in s for s in syms for n in names)

    if dso.startswith("[kernel"):
        if any(s.startswith(("finish_task_switch", "__schedule")) for s in syms[:3]):
            return "kernel: context switch"
        if has("tcp_recvmsg", "ksys_read", "sock_read_iter", "__sys_recvfrom"):
            if any(s.startswith(("_copy_to_iter", "copy_user", "rep_movs", "__skb_datagram_iter")) for s in syms[:2]):
                return "recv: copy to user"
            return "recv: rest of TCP receive"
        if has("do_epoll_wait", "ep_poll", "do_epoll_ctl"):
            return "epoll"
        if has("futex"):
            return "futex"
        if has("tcp_sendmsg", "ksys_write", "sock_write_iter", "__sys_sendto"):
            return "send (the answer)"
        if has("exc_page_fault"):
            return "kernel: page faults"
        if has("do_softirq", "net_rx_action", "irq_exit", "asm_sysvec", "asm_common_interrupt"):
            return "kernel: interrupts"
        if has("clone3", "clone"):
            return "kernel: thread start"
        return "kernel: other"
    base = os.path.basename(dso)
    for key, name in (("libpython", "Python interpreter"), ("litert", "TFLite"), ("tensorflow", "TFLite"),
                      ("uvloop", "uvloop"), ("httptools", "httptools"), ("numpy", "numpy"),
                      ("libmsjson", "libmsjson"), ("orjson", "orjson"), ("_ctypes", "ctypes")):  # fmt: skip
        if key in dso:
            return f"user: {name}"
    if base.startswith("libc."):
        return "user: libc memmove (copies)" if leaf.startswith(("__memmove", "__memcpy")) else "user: libc"
    return f"user: {base}"


def perf_kinds(text: str) -> tuple[int, collections.Counter[int], dict[int, collections.Counter[str]]]:
    """(samples, samples by thread, kinds by thread) of ``perf script -F tid,ip,sym,dso`` output."""
    by_tid: collections.Counter[int] = collections.Counter()
    kinds: dict[int, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    tid: int | None = None
    stack: list[tuple[str, str]] = []

    def flush() -> None:
        if tid is not None and stack:
            by_tid[tid] += 1
            kinds[tid][kind(stack)] += 1

    for line in text.splitlines():
        if not line.strip():
            continue
        if line.strip().isdigit():  # a sample's thread id (right-aligned: it may start with spaces)
            flush()
            tid, stack = int(line), []
            continue
        _, _, rest = line.strip().partition(" ")
        m = re.match(r"(.*) \((.*)\)$", rest)
        sym, dso = (m[1], m[2]) if m else (rest, "?")
        stack.append((re.sub(r"\+0x[0-9a-f]+$", "", sym), dso))
    flush()
    return sum(by_tid.values()), by_tid, kinds


def perf_script(data: Path) -> str:
    return subprocess.run(
        ["perf", "script", "-i", str(data), "-F", "tid,ip,sym,dso", "--no-demangle"], capture_output=True, text=True
    ).stdout


def spy_functions(out: Path) -> dict[str, collections.Counter[str]]:
    """py-spy raw output -> self samples by Python function, per thread name."""
    found: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for line in out.read_text().splitlines() if out.exists() else []:
        stack, _, n = line.rpartition(" ")
        frames = stack.split(";")
        if len(frames) > 1:
            found[frames[0]][frames[-1].split(" (")[0]] += int(n)
    return found


def _send_bodies(port: int, size: int, n: int, go: Connection) -> None:
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        data = os.urandom(size)
        for _ in range(n):
            go.recv()
            s.sendall(data)


def receive_floor(size: int, n: int = 300) -> dict[str, float]:
    """The receiver's CPU per ``size``-byte body over loopback, reading into a preallocated buffer, and the wall
    time from its first read to its last (the sender is another process)."""
    with socket.socket() as ls:
        ls.bind(("127.0.0.1", 0))
        ls.listen(1)
        ours, theirs = mp.Pipe()
        p = mp.get_context("spawn").Process(target=_send_bodies, args=(ls.getsockname()[1], size, n, theirs))
        p.start()
        c, _ = ls.accept()
        view = memoryview(bytearray(size))
        walls: list[float] = []
        reads: list[int] = []
        with c:
            cpu0 = time.thread_time()
            for i in range(n):
                ours.send(b"")
                got, k = c.recv_into(view, size), 1
                t0 = time.perf_counter()
                while got < size:
                    got += c.recv_into(view[got:], size - got)
                    k += 1
                if i >= n // 10:
                    walls.append(time.perf_counter() - t0)
                    reads.append(k)
            cpu = (time.thread_time() - cpu0) / n
        p.join(30)
    return {"cpu_ms": cpu * 1e3, "wall_ms": statistics.median(walls) * 1e3, "reads": statistics.median(reads)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--body", choices=("binary", "json"), default="binary")
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=4.0, help="measured seconds of the steady state")
    ap.add_argument("--tree", default=str(REPO / "operator"), help="the operator/ whose server runs")
    ap.add_argument("--spy", action="store_true", help="py-spy by Python function instead of perf")
    ap.add_argument("--models", help="a directory to keep the built models in (else a temporary one)")
    args = ap.parse_args()
    work = Path(args.models) if args.models else Path(tempfile.mkdtemp(prefix="cpu-split-"))
    work.mkdir(parents=True, exist_ok=True)
    if not (work / "mobilenetv2_int8.tflite").exists():
        S.build_models(work, quick=False)
    import numpy as np

    x = np.random.default_rng(0).uniform(-1, 1, (1, 224, 224, 3)).astype(np.float32)
    model, name = work / "mobilenetv2_int8.tflite", "mobilenet"
    request = S.requests_for(name, S.input_name(model), x, args.body == "binary")
    body_bytes = len(request.split(b"\r\n\r\n", 1)[1])
    port, mport = S.free_port(), S.free_port()
    proc = S.start_ours(model, name, port, work / "server.log", tree=Path(args.tree), metrics_port=mport)
    use_perf = not args.spy and shutil.which("perf") is not None
    try:
        S.wait_ready(port, name, proc)
        load: dict[str, Any] = {}
        gen = threading.Thread(
            target=lambda: load.update(S.run_loadgen(port, request, args.clients, 1.0, args.seconds + 3.0))
        )
        gen.start()
        time.sleep(3.0)  # the load generator's start and warm-up
        pid = proc.pid
        m0, t0, r0, w0 = S.scrape(mport), tasks(pid), read_syscalls(pid), time.monotonic()
        data, spied = work / "perf.data", work / "spy.txt"
        secs = str(max(1, round(args.seconds)))
        if use_perf:
            cmd = ["perf", "record", "-q", "-e", "cpu-clock", "-F", "999", "-g", "-p", str(pid), "-o", str(data),
                   "--", "sleep", secs]  # fmt: skip
        elif args.spy:
            cmd = [str(Path(S.PY).with_name("py-spy")), "record", "-p", str(pid), "-d", secs, "-r", "250", "-f",
                   "raw", "-o", str(spied), "--nonblocking", "--threads"]  # fmt: skip
        else:
            cmd = ["sleep", secs]
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        m1, t1, r1, w1 = S.scrape(mport), tasks(pid), read_syscalls(pid), time.monotonic()
        gen.join()
    finally:
        S.stop(proc)

    def total(m: dict[str, float], prefix: str) -> float:
        return sum(v for k, v in m.items() if k.startswith(prefix))

    answered = total(m1, "modelship_request_duration_seconds_count") - total(
        m0, "modelship_request_duration_seconds_count"
    )
    invoke = total(m1, "modelship_invoke_cpu_seconds_total") - total(m0, "modelship_invoke_cpu_seconds_total")
    cpu = m1["modelship_process_cpu_seconds_total"] - m0["modelship_process_cpu_seconds_total"]
    if answered <= 0 or cpu <= 0:
        print("no request answered in the window", file=sys.stderr)
        return 1
    print(f"MobileNetV2 int8, {args.body} ({body_bytes} B bodies), {args.clients} clients, {w1 - w0:.1f} s: "
          f"{answered / (w1 - w0):.0f} req/s (load generator: p50 {load.get('p50_ms', float('nan')):.2f} ms), "
          f"load average {os.getloadavg()[0]:.2f}")  # fmt: skip
    print(f"server CPU {cpu / answered * 1e3:.3f} ms/request, invoke() {invoke / answered * 1e3:.3f} ms/request: "
          f"in-server invoke share {invoke / cpu:.4f}; read syscalls {(r1 - r0) / answered:.2f}/request")  # fmt: skip
    loop_tid = pid
    for tid, b in sorted(t1.items(), key=lambda kv: -(kv[1][0] - t0.get(kv[0], (0.0, 0.0, 0, 0))[0])):
        a = t0.get(tid, (0.0, 0.0, 0, 0))
        used = b[0] - a[0]
        if used < 0.01 * cpu:
            continue
        who = "loop" if tid == loop_tid else "thread"
        print(f"  {who} {tid}: {used / cpu * 100:.1f}% of the server's CPU, {used / answered * 1e3:.3f} ms/request; "
              f"waiting for a CPU {(b[1] - a[1]) / answered * 1e3:.3f} ms/request; context switches/request "
              f"{(b[2] - a[2]) / answered:.2f} voluntary, {(b[3] - a[3]) / answered:.2f} involuntary")  # fmt: skip
    if use_perf:
        n, by_tid, kinds = perf_kinds(perf_script(data))
        print(f"perf cpu-clock samples: {n}")
        for tid, k in by_tid.most_common(4):
            print(f"  {'loop' if tid == loop_tid else 'thread'} {tid}: {k / n * 100:.1f}% of the samples")
            for what, c in kinds[tid].most_common(16):
                print(f"    {c / k * 100:5.1f}% of the thread  {what}")
    elif args.spy:
        for thread, counts in spy_functions(spied).items():
            k = sum(counts.values())
            print(f"  {thread}: " + ", ".join(f"{f} {c / k * 100:.1f}%" for f, c in counts.most_common(12)))
    floor = receive_floor(body_bytes)
    print(f"receive floor, {body_bytes} B over loopback into a preallocated buffer: receiver CPU "
          f"{floor['cpu_ms']:.3f} ms/body, first read to last {floor['wall_ms']:.3f} ms, {floor['reads']:.0f} "
          f"reads")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
