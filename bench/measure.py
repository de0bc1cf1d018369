"""Running one command in its own process and measuring it; describing the machine.

Peak memory: `os.wait4(pid)` returns the rusage of that one child, and Linux fills its
ru_maxrss with max(child's own peak RSS, largest peak RSS among the child's own reaped
descendants). So it is the peak RSS of the largest single process in the child's tree
(not a sum of processes alive at the same time; every tool measured here runs in one
process, its threads included). Wall time is time.perf_counter() around start..reap.
Caveat: Linux also counts the RSS this (parent) process has when it forks the child, so the
process calling measure() must stay small; bench/run.py never loads a model's weights itself.
"""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path


@dataclass(frozen=True)
class Run:
    cmd: list[str]
    seconds: float
    peak_mib: float
    returncode: int
    stdout: Path
    stderr: Path
    others_cpu_s: float  # CPU seconds used on the machine by processes other than this child, meanwhile

    def text(self) -> str:
        return self.stdout.read_text(errors="replace") + self.stderr.read_text(errors="replace")


def measure(cmd: list[str], log_stem: Path, cwd: Path | None = None) -> Run:
    """Run `cmd` to completion, stdout/stderr into `<log_stem>.out/.err`; wall time and peak RSS."""
    out, err = log_stem.with_suffix(".out"), log_stem.with_suffix(".err")
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        busy_before, start = machine_busy_s(), time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=stdout, stderr=stderr, cwd=cwd)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds, busy = time.perf_counter() - start, machine_busy_s() - busy_before
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here; keep Popen from waiting again
    others = max(0.0, busy - usage.ru_utime - usage.ru_stime)
    return Run(cmd, seconds, usage.ru_maxrss / 1024, proc.returncode, out, err, others)


def machine_busy_s() -> float:
    """CPU seconds all cores have spent busy since boot (/proc/stat: everything but idle and iowait)."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, Path("/proc/stat").read_text().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def checked(run: Run, allowed: tuple[int, ...] = (0,)) -> Run:
    """`run`, or exit with its stderr tail when its exit status is not one of `allowed`."""
    if run.returncode not in allowed:
        tail = "\n".join(run.text().splitlines()[-30:])
        sys.exit(f"bench: `{' '.join(map(str, run.cmd))}` exited {run.returncode}:\n{tail}")
    return run


def machine() -> dict[str, str]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor() or "unknown")
    mem_kib = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal:"))
    return {
        "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "cpu": f"{cpu}, {os.cpu_count()} logical cores",
        "ram": f"{mem_kib / 2**20:.1f} GiB",
        "os": f"{platform.system()} {platform.release()}, Python {platform.python_version()}",
    }


def versions() -> dict[str, str]:
    names = ["workbench", "torch", "transformers", "onnx", "onnxscript", "onnxruntime", "polygraphy",
             "onnxconverter-common", "numpy"]
    found = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "workbench"], capture_output=True, text=True).stdout.strip()
    found["workbench"] += f" (git {commit or '?'}{', workbench/ has uncommitted changes' if dirty else ''})"
    return found
