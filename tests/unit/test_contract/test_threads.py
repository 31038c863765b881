"""Converting contract and API types from many threads at once, as the operator's kopf workers do.

msgspec builds a Struct type's decoding info at its first use, and two threads doing that first
build at once crashed the process (SIGSEGV) in 14-22 runs of 30. Each run is a fresh interpreter
(the info is per process), so the crash, when it happens, is the child's exit status, not ours.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.unit

RUNS = 6  # before the fix, 6 clean runs in a row had a chance of about 0.2%

CONVERT_FROM_THREADS = """
import threading
import msgspec
import {module} as m

barrier = threading.Barrier(16)

def work():
    barrier.wait()
    for _ in range(3):
        for name in {names!r}:
            cls = getattr(m, name)
            msgspec.convert(msgspec.to_builtins(cls(**{kwargs!r}.get(name, {{}}))), cls)

threads = [threading.Thread(target=work) for _ in range(16)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print("ok")
"""


@pytest.mark.parametrize(("module", "names", "kwargs"), [
    ("kuberag_contract.config", ["ApiConfig", "RateLimit", "Cache", "Retrieval"], {}),
])
def test_first_conversions_from_sixteen_threads_do_not_crash(module, names, kwargs):
    code = CONVERT_FROM_THREADS.format(module=module, names=names, kwargs=kwargs)
    for _ in range(RUNS):
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0 and proc.stdout.strip() == "ok", (
            f"converting {module} types from 16 threads exited with {proc.returncode}:\n{proc.stderr[-2000:]}")
