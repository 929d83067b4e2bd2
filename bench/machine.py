"""What the benchmarks say about the machine they ran on: CPU, memory, load, versions, and its copy bandwidth."""
from __future__ import annotations

import contextlib
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
# CPU features that decide which kernels PyTorch and llama.cpp can use
FLAGS_OF_INTEREST = ("avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16",
                     "avx_vnni", "amx_bf16", "amx_int8", "amx_tile")


def copy_bandwidth(mbytes: int = 512, repeats: int = 7) -> float:
    """Bytes moved (read + write) per second by copying a large float32 tensor."""
    src = torch.ones(mbytes * 2**20 // 4)
    dst = torch.empty_like(src)
    dst.copy_(src)  # fault the pages in first
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        dst.copy_(src)
        times.append(time.perf_counter() - t)
    return 2 * src.nbytes / statistics.median(times)


def cpu_info() -> dict[str, str]:
    model, flags = platform.processor(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    except OSError:
        pass
    mem_kb = 0
    with contextlib.suppress(OSError, StopIteration):
        mem_kb = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                          if line.startswith("MemTotal:")))
    return {"nproc": str(os.cpu_count()), "cpu": model,
            "flags": " ".join(f for f in FLAGS_OF_INTEREST if f in flags) or "none of interest",
            "ram": f"{mem_kb / 2**20:.1f} GiB", "torch": f"{torch.__version__} (CPU capability "
            f"{torch.backends.cpu.get_cpu_capability()})"}


def git_commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    return commit + (" (uncommitted changes)" if git("status", "--porcelain", "--untracked-files=no") else "")


def loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())
