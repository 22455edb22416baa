"""Memory of the backup stream: zstd's buffers are bounded (bench/backup_rss.py has the end-to-end figures)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.unit

SCRIPT = textwrap.dedent("""
    import io, os
    from dbkit.backup._common import CHUNK, _Pump

    class Source(io.RawIOBase):  # 128 MiB of COPY-like text with some incompressible bytes, made on the fly
        def __init__(self):
            self.left = 128 << 20
            self.block = b"".join(b"%d\\t2025-06-01 00:00:00+00\\tfiller\\n" % (i % 100) for i in range(40000))
        def readable(self):
            return True
        def read(self, n=-1):
            n = min(n, self.left, len(self.block))
            self.left -= n
            noise = os.urandom(n // 4)  # partly incompressible, like real column data
            return (noise + self.block)[:n]

    def peak_kib():  # VmHWM: this process's peak RSS (ru_maxrss would carry the forking parent's over exec)
        with open("/proc/self/status") as fh:
            return next(int(ln.split()[1]) for ln in fh if ln.startswith("VmHWM:"))

    import zstandard  # loaded before the baseline
    before = peak_kib()
    pump = _Pump(Source(), "zstd", None)
    out = 0
    while chunk := pump.read(CHUNK):
        out += len(chunk)
    grown = (peak_kib() - before) / 1024
    print(f"{grown:.1f} {out}")
""")


def test_zstd_stream_memory_is_bounded():
    res = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True)
    grown, stored = res.stdout.split()
    assert 0 < int(stored) < 128 << 20
    assert float(grown) < 40, f"zstd grew the process by {grown} MiB"  # default job size: ~65 MiB
