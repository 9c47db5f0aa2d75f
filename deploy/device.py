"""On-device benchmarks with ``lce_benchmark_model`` over adb (Android) or ssh (ARM64 Linux).

The user provides the ``lce_benchmark_model`` binary for the device:

* the LCE v0.16.0 release assets ``lce_benchmark_model_android_arm64`` (Android) and
  ``lce_benchmark_model_aarch64`` (64-bit Linux, e.g. Raspberry Pi OS 64-bit), or
* their own build from the LCE repository at tag v0.16.0:
  ``bazelisk build //larq_compute_engine/tflite/benchmark:lce_benchmark_model
  --config=android_arm64 -c opt`` (or ``--config=aarch64``).

The harness pushes the binary and the models, runs them with the right flags
(``--use_indirect_bgemm=true`` so grouped binary convolutions run, ``--num_threads``,
``--enable_op_profiling=true``), parses TFLite's benchmark output and per-op profile, and
returns the same kind of report as the host benchmark.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

__all__ = ["DeviceError", "DeviceRunner", "parse_benchmark_output", "run_device_benchmark"]

ADB_REMOTE_DIR = "/data/local/tmp/melius_larq"
SSH_REMOTE_DIR = "/tmp/melius_larq"


class DeviceError(OSError):
    """The device cannot be reached or the benchmark binary failed."""


class DeviceRunner:
    """Runs commands on a device through ``adb`` or ``ssh``/``scp``.

    Args:
        transport: ``"adb"`` or ``"ssh"``.
        host: ssh destination (``user@board``); required for ssh.
        serial: adb device serial (``adb -s``), optional.
        adb, ssh, scp: the executables to use.
        timeout: seconds allowed for one command.
    """

    def __init__(self, transport: str, *, host: str | None = None, serial: str | None = None,
                 adb: str = "adb", ssh: str = "ssh", scp: str = "scp",
                 timeout: float = 600.0):  # fmt: skip
        if transport not in ("adb", "ssh"):
            raise ValueError(f"Expected transport 'adb' or 'ssh', but got {transport!r}.")
        if transport == "ssh" and not host:
            raise ValueError("The ssh transport needs host='user@board'.")
        self.transport, self.host, self.serial = transport, host, serial
        self.adb, self.ssh, self.scp, self.timeout = adb, ssh, scp, timeout
        self.remote_dir = ADB_REMOTE_DIR if transport == "adb" else SSH_REMOTE_DIR
        tool = adb if transport == "adb" else ssh
        if shutil.which(tool) is None:
            raise DeviceError(
                f"{tool!r} was not found on PATH: install "
                + ("Android platform-tools (adb)" if transport == "adb" else "an ssh client")
                + " or pass its path."
            )

    def _run(self, argv: list[str]) -> str:
        try:
            result = subprocess.run(argv, capture_output=True, text=True, timeout=self.timeout)
        except subprocess.TimeoutExpired as err:
            raise DeviceError(f"{shlex.join(argv)} timed out after {self.timeout:.0f} s") from err
        if result.returncode != 0:
            raise DeviceError(
                f"{shlex.join(argv)} failed (exit {result.returncode}): "
                f"{(result.stderr or result.stdout).strip()[-2000:]}"
            )
        return result.stdout

    def _adb(self, *args: str) -> list[str]:
        return [self.adb, *(["-s", self.serial] if self.serial else []), *args]

    def check_connected(self) -> None:
        """Raises DeviceError unless a device answers."""
        if self.transport == "adb":
            out = self._run([self.adb, "devices"])
            devices = [
                line.split()[0]
                for line in out.splitlines()[1:]
                if line.strip() and line.split()[-1] == "device"
            ]
            if not devices:
                raise DeviceError(
                    "adb sees no connected device (`adb devices` lists none in state 'device'): "
                    "connect a phone with USB debugging enabled and accept the prompt."
                )
            if self.serial and self.serial not in devices:
                raise DeviceError(f"Device {self.serial!r} is not connected; adb sees {devices}.")
        else:
            self._run([self.ssh, "-o", "BatchMode=yes", self.host, "true"])

    def shell(self, command: str) -> str:
        if self.transport == "adb":
            return self._run(self._adb("shell", command))
        return self._run([self.ssh, "-o", "BatchMode=yes", self.host, command])

    def push(self, local: str | Path, remote_name: str) -> str:
        remote = f"{self.remote_dir}/{remote_name}"
        if self.transport == "adb":
            self._run(self._adb("push", str(local), remote))
        else:
            self._run([self.scp, "-q", str(local), f"{self.host}:{remote}"])
        return remote


_SUMMARY = re.compile(
    r"Inference timings in us: Init: (?P<init>[\d.]+), First inference: (?P<first>[\d.]+), "
    r"Warmup \(avg\): (?P<warmup>[\d.]+), Inference \(avg\): (?P<avg>[\d.]+)"
)
_COUNT = re.compile(
    r"count=(?P<count>\d+) first=(?P<first>[\d.]+) curr=(?P<curr>[\d.]+) min=(?P<min>[\d.]+) "
    r"max=(?P<max>[\d.]+) avg=(?P<avg>[\d.]+) std=(?P<std>[\d.]+)"
)
_MEMORY = re.compile(
    r"(?:Peak memory footprint|Memory footprint delta[^:]*) \(MB\): init=(?P<init>[\d.]+) overall=(?P<overall>[\d.]+)"
)


def _table(text: str, title: str) -> list[dict]:
    """Rows of one '==== title ====' section of the TFLite profiler output."""
    rows: list[dict] = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if re.search(rf"=+ {re.escape(title)} =+", line):
            header = re.findall(r"\[([^\]]+)\]", lines[i + 1])
            for row in lines[i + 2 :]:
                if not row.strip() or row.lstrip().startswith("="):
                    break
                name = None
                match = re.search(r"\[(.*)\]\s*$", row)
                if match and header and header[-1].lower() == "name":
                    name = match.group(1)
                    row = row[: match.start()]
                cells = row.split()
                keys = [h for h in header if h.lower() != "name"]
                if len(cells) < len(keys):
                    continue
                entry = {}
                for key, cell in zip(keys, cells):
                    cell = cell.rstrip("%")
                    try:
                        entry[key] = float(cell)
                    except ValueError:
                        entry[key] = cell
                if name is not None:
                    entry["name"] = name
                rows.append(entry)
            break
    return rows


def parse_benchmark_output(text: str) -> dict:
    """Parses the output of TFLite's ``benchmark_model`` / LCE's ``lce_benchmark_model``.

    Returns:
        dict with ``init_ms``, ``first_ms``, ``warmup_avg_ms``, ``avg_ms``, ``min_ms``,
        ``max_ms``, ``std_ms``, ``count`` (timed runs), ``memory_mb`` (overall, when printed),
        ``run_order`` (per-op rows of the last profile) and ``by_node_type`` (per-op-type rows).

    Raises:
        DeviceError: when the text has no timing summary (the binary failed or is not a
            benchmark tool).
    """
    summary = _SUMMARY.search(text)
    counts = list(_COUNT.finditer(text))
    if not summary or not counts:
        tail = "\n".join(text.strip().splitlines()[-5:])
        raise DeviceError(f"No benchmark timings in the output; it ended with:\n{tail}")
    timed = counts[-1]
    result = {
        "init_ms": float(summary["init"]) / 1e3,
        "first_ms": float(summary["first"]) / 1e3,
        "warmup_avg_ms": float(summary["warmup"]) / 1e3,
        "avg_ms": float(summary["avg"]) / 1e3,
        "min_ms": float(timed["min"]) / 1e3,
        "max_ms": float(timed["max"]) / 1e3,
        "std_ms": float(timed["std"]) / 1e3,
        "count": int(timed["count"]),
    }
    memory = _MEMORY.search(text)
    if memory:
        result["memory_mb"] = float(memory["overall"])
    # The profiler prints an initialization profile and then the inference profile; keep the
    # last table of each kind, which describes the timed runs.
    marker = text.rfind("Operator-wise Profiling Info for Regular Benchmark Runs")
    body = text[marker:] if marker >= 0 else text
    result["run_order"] = _table(body, "Run Order")
    result["by_node_type"] = _table(body, "Summary by node type")
    return result


def benchmark_command(remote_binary: str, remote_model: str, *, threads: int, num_runs: int,
                      warmup_runs: int, op_profiling: bool, use_indirect_bgemm: bool) -> str:  # fmt: skip
    """The shell command that runs one benchmark on the device."""
    flags = [
        f"--graph={remote_model}",
        f"--num_threads={threads}",
        f"--num_runs={num_runs}",
        f"--warmup_runs={warmup_runs}",
        f"--use_indirect_bgemm={'true' if use_indirect_bgemm else 'false'}",
        f"--enable_op_profiling={'true' if op_profiling else 'false'}",
    ]
    return shlex.join([remote_binary, *flags])


def run_device_benchmark(
    models: Sequence[str | Path],
    *,
    binary: str | Path,
    transport: str = "adb",
    host: str | None = None,
    serial: str | None = None,
    threads: Sequence[int] = (1, 4),
    num_runs: int = 50,
    warmup_runs: int = 5,
    op_profiling: bool = True,
    use_indirect_bgemm: bool = True,
    adb: str = "adb",
    ssh: str = "ssh",
    scp: str = "scp",
) -> dict:
    """Benchmarks flatbuffers on a phone (adb) or an ARM64 Linux board (ssh).

    Returns:
        dict with ``transport``, ``device``, ``rows`` (one per model x threads, each the
        parsed output plus ``model``, ``threads``, ``runtime``) and ``commands`` (what ran).
    """
    from melius_larq.deploy.flatbuffer import load_flatbuffer

    binary = Path(binary)
    if not binary.is_file():
        raise ValueError(
            f"lce_benchmark_model binary {str(binary)!r} does not exist: download the LCE "
            "v0.16.0 release asset for the device or build it (see deploy/device.py)."
        )
    for model in models:
        load_flatbuffer(model)  # a clear error before anything is pushed
    runner = DeviceRunner(transport, host=host, serial=serial, adb=adb, ssh=ssh, scp=scp)
    runner.check_connected()
    runner.shell(f"mkdir -p {runner.remote_dir}")
    remote_binary = runner.push(binary, "lce_benchmark_model")
    runner.shell(f"chmod +x {remote_binary}")
    device = runner.shell("uname -m").strip()
    rows, commands = [], []
    for model in models:
        remote_model = runner.push(model, Path(model).name)
        for n in threads:
            command = benchmark_command(
                remote_binary, remote_model, threads=n, num_runs=num_runs,
                warmup_runs=warmup_runs, op_profiling=op_profiling,
                use_indirect_bgemm=use_indirect_bgemm,
            )  # fmt: skip
            commands.append(command)
            parsed = parse_benchmark_output(runner.shell(command))
            rows.append({"model": Path(model).stem, "threads": n,
                         "runtime": f"lce_benchmark_model ({transport})", **parsed})  # fmt: skip
    return {"transport": transport, "device": device, "rows": rows, "commands": commands}
