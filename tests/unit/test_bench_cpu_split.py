"""bench/cpu_split.py's reading of a profile (pure): each perf sample in the kind its call chain says, per thread."""

from __future__ import annotations

from pathlib import Path

from bench.cpu_split import kind, perf_kinds, spy_functions

K = "[kernel.kallsyms]"
RECV = [("sock_recvmsg", K), ("sock_read_iter", K), ("vfs_read", K), ("ksys_read", K), ("do_syscall_64", K),
        ("read", "/usr/lib/x86_64-linux-gnu/libc.so.6")]  # fmt: skip

# two samples of the loop thread (the body's copy out of the kernel; Python), one of a worker (TFLite), as
# `perf script -F tid,ip,sym,dso` prints them (a thread id shorter than the widest is right-aligned)
SCRIPT = """\
101
\tffffffff81b6ccb0 _copy_to_iter+0x10 ([kernel.kallsyms])
\tffffffff81e4b922 __skb_datagram_iter ([kernel.kallsyms])
\tffffffff820123c8 tcp_recvmsg_locked ([kernel.kallsyms])
\tffffffff8201352e tcp_recvmsg ([kernel.kallsyms])
\tffffffff816bb8da ksys_read ([kernel.kallsyms])
\t           f82ec read (/usr/lib/x86_64-linux-gnu/libc.so.6)

101
\t          1a2b3c _PyEval_EvalFrameDefault+0x2f (/usr/lib/libpython3.11.so.1.0)

  102
\t          4d5e6f xnn_compute_gemm (/venv/lib/python3.11/site-packages/ai_edge_litert/libpywrap_litert_common.so)
"""


def test_the_kernel_copy_of_a_body_is_told_from_the_rest_of_the_receive() -> None:
    copy = [("_copy_to_iter", K), ("__skb_datagram_iter", K), ("tcp_recvmsg_locked", K), ("tcp_recvmsg", K), *RECV]
    assert kind(copy) == "recv: copy to user"
    assert kind([("tcp_cleanup_rbuf", K), ("tcp_recvmsg_locked", K), ("tcp_recvmsg", K), *RECV]) == (
        "recv: rest of TCP receive"
    )


def test_kernel_samples_by_what_the_thread_was_doing() -> None:
    assert kind([("finish_task_switch.isra.0", K), ("__schedule", K), ("schedule", K), *RECV]) == (
        "kernel: context switch"  # preempted on the way out of a read: the switch, not the receive
    )
    assert kind([("ep_poll", K), ("do_epoll_wait", K), ("do_syscall_64", K)]) == "epoll"
    assert kind([("futex_wake", K), ("do_futex", K), ("do_syscall_64", K)]) == "futex"
    assert kind([("tcp_sendmsg_locked", K), ("tcp_sendmsg", K), ("ksys_write", K)]) == "send (the answer)"


def test_user_samples_by_library() -> None:
    assert kind([("_PyEval_EvalFrameDefault", "/usr/lib/libpython3.11.so.1.0")]) == "user: Python interpreter"
    assert kind([("__memmove_avx512_unaligned_erms", "/usr/lib/x86_64-linux-gnu/libc.so.6")]) == (
        "user: libc memmove (copies)"
    )
    assert kind([("malloc", "/usr/lib/x86_64-linux-gnu/libc.so.6")]) == "user: libc"
    assert kind([("read_flat<float>", "/opt/venv/lib/modelship/libmsjson.so")]) == "user: libmsjson"


def test_perf_script_output_is_counted_per_thread() -> None:
    n, by_tid, kinds = perf_kinds(SCRIPT)
    assert n == 3
    assert by_tid == {101: 2, 102: 1}
    assert kinds[101] == {"recv: copy to user": 1, "user: Python interpreter": 1}
    assert kinds[102] == {"user: TFLite": 1}


def test_py_spy_self_samples_by_thread(tmp_path: Path) -> None:
    raw = tmp_path / "spy.txt"
    raw.write_text(
        "thread (1): MainThread;run (a.py:1);_Conn._write (c.py:9) 3\n"
        "thread (1): MainThread;run (a.py:1);Reading._feed (r.py:5) 1\n"
        "thread (2): worker;Batcher._worker_main (b.py:1);Interpreter.invoke (i.py:7) 5\n"
    )
    found = spy_functions(raw)
    assert found["thread (1): MainThread"] == {"_Conn._write": 3, "Reading._feed": 1}
    assert found["thread (2): worker"] == {"Interpreter.invoke": 5}
