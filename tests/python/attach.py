"""The agent's path: ldbg_attach() (idempotent, from a thread without the GIL) imports the
helper into sys.modules; a breakpoint set written into LDBG_CONTROL (as the agent does with
process_vm_writev) is applied by the helper thread and acknowledged."""
import ctypes
import json
import os
import struct
import sys
import time


def find_so():
    for d in sys.path:
        p = os.path.join(d, "libdebugger_helper.abi3.so")
        if os.path.exists(p):
            return p
    raise FileNotFoundError("libdebugger_helper.abi3.so not on sys.path")


def f(x):
    y = x * 2  # BP:f
    return y


def wait_for(pred, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.005)  # releases the GIL for the helper's threads
    return False


def main():
    lib = ctypes.CDLL(find_so())
    imported_before = "libdebugger_helper" in sys.modules
    rc1 = lib.ldbg_attach()
    rc2 = lib.ldbg_attach()
    imported = wait_for(lambda: "libdebugger_helper" in sys.modules)
    import libdebugger_helper as h
    from ldbg_testlib import SINK, line_of  # installs the sink

    base = ctypes.addressof(ctypes.c_char.in_dll(lib, "LDBG_CONTROL"))
    magic = ctypes.string_at(base, 8)
    abi, helper_pid = struct.unpack("<II", ctypes.string_at(base + 8, 8))
    line = line_of(__file__, "# BP:f")
    payload = json.dumps({
        "breakpoints": [{"id": "ctl", "filename": "attach.py", "line_number": line,
                         "limits": {"rate": 1e9, "burst": 1e9}}],
        "settings": {"process_rate": 1e9},
    }).encode()
    u64 = ctypes.c_uint64
    gen = ctypes.cast(base + 16, ctypes.POINTER(u64))
    applied = ctypes.cast(base + 24, ctypes.POINTER(u64))
    data_len = ctypes.cast(base + 32, ctypes.POINTER(ctypes.c_uint32))
    gen[0] = 1
    ctypes.memmove(base + 40, payload, len(payload))
    data_len[0] = len(payload)
    gen[0] = 2
    acked = wait_for(lambda: applied[0] == 2)
    st = h.status()["breakpoints"]
    f(21)
    hits = SINK.hits("ctl")
    lib.ldbg_emit(None, 0)  # exported and callable
    # Removal through the control block.
    payload = b'{"breakpoints": []}'
    gen[0] = 3
    ctypes.memmove(base + 40, payload, len(payload))
    data_len[0] = len(payload)
    gen[0] = 4
    acked_removal = wait_for(lambda: applied[0] == 4)
    print("RESULT " + json.dumps({
        "imported_before": imported_before, "rc": [rc1, rc2], "imported": imported,
        "magic": magic.decode(), "abi": abi, "helper_pid_ok": helper_pid == os.getpid(),
        "acked": acked, "status": st, "hits": len(hits),
        "hit_file_path": hits[0]["$file_path"] if hits else None,
        "hit_line_number": hits[0]["$line_number"] if hits else None,
        "acked_removal": acked_removal, "after_removal": h.status()["breakpoints"],
    }), flush=True)


main()
