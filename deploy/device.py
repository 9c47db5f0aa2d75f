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


# A number as benchmark_model prints it: C++ streams switch to scientific notation for
# large values (avg=2.95034e+06) and print integers without a decimal point.
_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# Prefixes in front of the tool's own text: logcat ("07-14 13:14:52.859 22838 22838 I
# tflite  : ", "E/tflite  ( 8514): "), glog ("2018-09-10 12:36:37.571102: I
# tensorflow/.../benchmark_model.cc:361] ") and TFLite's own log level ("INFO: ", newer
# versions).
_PREFIXES = (
    re.compile(r"^\d\d-\d\d \d\d:\d\d:\d\d\.\d+\s+\d+\s+\d+\s+[VDIWEF]\s+[^:]*?\s*:\s?"),
    re.compile(r"^[VDIWEF]/[^:(]*\(\s*\d+\):\s?"),
    re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWEF] \S+:\d+\]\s?"),
    re.compile(r"^\.\.\. "),
)
_LEVEL = re.compile(r"^(?:INFO|WARN|WARNING|VERBOSE|DEBUG): ")
_RUNNING = re.compile(r"^Running benchmark for (?:at least )?\d+ iterations")
# A Stat line: "count=50 first=... curr=... min=... max=... avg=... std=..." (newer
# versions add p5/median/p95; a run of identical times prints "count=N curr=T(all same)";
# TF 1.x printed "curr=T count=N min=...").
_STAT = re.compile(r"^(?:count=\d+|curr=\S+ count=\d+)\b")
_PAIR = re.compile(rf"(\w+)=({_NUM})")
_SUMMARY = re.compile(r"(?:Average )?inference timings in us:(.*)$", re.IGNORECASE)
_SUMMARY_PART = re.compile(rf"([A-Za-z][A-Za-z ()]*?):\s*({_NUM})")
_SUMMARY_KEYS = {
    "init": "init", "first inference": "first", "warmup (avg)": "warmup", "warmup": "warmup",
    "inference (avg)": "avg", "inference": "avg", "no stats": "avg",
}  # fmt: skip
_SESSION = re.compile(rf"^Initialized session in ({_NUM}) ?ms")
_MEMORY = re.compile(
    rf"(?:Peak memory footprint|Memory footprint delta[^:]*) \(MB\): init=({_NUM}) overall=({_NUM})"
)
_PEAK = re.compile(rf"Overall peak memory footprint \(MB\) via periodic monitoring: ({_NUM})")
# Lines that say why the tool failed, most specific first.
_ERRORS = (
    re.compile(r"^(?:ERROR|FATAL|E)\b|Didn't find|unresolved custom op|not registered|"
               r"\bAborted\b|Segmentation fault|Check failed|No such file"),
    re.compile(r"\bfail(?:ed|ure|s)?\b|not found|Permission denied|\berror\b|\binvalid\b|"
               r"\bunsupported\b", re.IGNORECASE),
)  # fmt: skip


def _clean_lines(text: str) -> list[str]:
    """The tool's lines without CR, ANSI colours, logcat/glog prefixes and 'INFO: '."""
    lines = []
    for raw in _ANSI.sub("", text.replace("\r\n", "\n").replace("\r", "\n")).split("\n"):
        line = raw.strip()
        for prefix in _PREFIXES:
            line = prefix.sub("", line, count=1)
        lines.append(_LEVEL.sub("", line.strip(), count=1))
    return lines


def _stat(line: str) -> dict[str, float]:
    """The key=value numbers of a Stat line; a run of identical times gets min=max=avg."""
    values = {key: float(value) for key, value in _PAIR.findall(line)}
    if "avg" not in values and "curr" in values:  # "count=N curr=T(all same)"
        curr = values["curr"]
        values.update(first=curr, min=curr, max=curr, avg=curr, std=0.0)
    return values


def _is_number(cell: str) -> bool:
    return re.fullmatch(_NUM, cell.rstrip("%")) is not None


def _split_row(row: str, keys: list[str], has_name: bool, csv: bool) -> list[str] | None:
    """The cells of a profiler row: a type (may contain spaces and commas, e.g. XNNPACK's
    'Convolution (NHWC, QU8) GEMM'), the numeric columns and, in per-node tables, a name."""
    cells = [c.strip() for c in row.split("\t") if c.strip()]
    if len(cells) == len(keys) and all(_is_number(c) for c in cells[1 : len(keys) - has_name]):
        return cells
    numeric = len(keys) - 1 - has_name
    joiner = ", " if csv else " "
    tokens = [c.strip() for c in row.split(",")] if csv else row.split()
    for i in range(1, len(tokens) - numeric + 1):
        end = i + numeric
        if all(_is_number(t) for t in tokens[i:end]) and (end < len(tokens)) == has_name:
            rest = [joiner.join(tokens[end:])] if has_name else []
            return [joiner.join(tokens[:i]), *tokens[i:end], *rest]
    return None


def _table(lines: list[str], title: str) -> list[dict]:
    """Rows of the first '==== title ====' section of TFLite's profiler output.

    Keys are the column titles as printed ('node type', 'first', 'avg ms', '%', 'cdf%',
    'mem KB', 'times called' in per-node tables; 'Node type', 'count', 'avg ms', 'avg %',
    'cdf %', ... in the per-type summary) plus 'name'; numbers are floats ('%' dropped).
    The CSV layout (--op_profiling_output_mode=csv) gets the same keys.
    """
    kind = "Node type" if title == "Summary by node type" else "node type"
    for i, line in enumerate(lines):
        if not re.search(rf"=+ {re.escape(title)} =+", line) or i + 1 >= len(lines):
            continue
        header = re.findall(r"\[([^\]]+)\]", lines[i + 1])
        csv = not header
        if csv:
            header = [h.strip() for h in lines[i + 1].split(",")]
        header = [{"avg_ms": "avg ms", "Name": "name"}.get(h, h) for h in header]
        if len(header) < 3:
            return []
        header[0] = kind
        if kind == "Node type" and "avg %" not in header and "%" in header:
            header[header.index("%")] = "avg %"
        has_name = header[-1].lower() == "name"
        rows: list[dict] = []
        for row in lines[i + 2 :]:
            if not row or row.startswith("="):
                break
            cells = _split_row(row, header, has_name, csv)
            if cells is None:
                break
            entry: dict = {}
            for key, cell in zip(header, cells):
                entry[key] = float(cell.rstrip("%")) if key != kind and _is_number(cell) else cell
            if has_name:
                match = re.fullmatch(r"\[(.*)\](?::\d+)?", entry["name"])
                entry["name"] = match.group(1) if match else entry["name"]
            rows.append(entry)
        return rows
    return []


def _failure(lines: list[str]) -> str:
    """The line to quote when the tool printed no timings: its first error message."""
    text = [line for line in lines if line and not _STAT.match(line)]
    for pattern in _ERRORS:
        found = next((line for line in text if pattern.search(line)), None)
        if found:
            return found[:300]
    return text[-1][:300] if text else "(no output)"


def parse_benchmark_output(text: str) -> dict:
    """Parses the output of TFLite's ``benchmark_model`` / LCE's ``lce_benchmark_model``.

    Accepts the formats of TF 1.13 to current (``Average inference timings in us: Warmup:
    ..., Init: ..., no stats: ...`` and ``Inference timings in us: Init: ..., First
    inference: ..., Warmup (avg): ..., Inference (avg): ...``; numbers as integers, floats
    or in scientific notation), with ``INFO:``, logcat or glog prefixes, ANSI colours and
    CR/LF line endings, and the op profile with or without the ``[start]`` column, with
    XNNPACK node types that contain spaces, or as CSV.

    Returns:
        dict with ``init_ms``, ``first_ms``, ``warmup_avg_ms``, ``avg_ms``, ``min_ms``,
        ``max_ms``, ``std_ms``, ``count`` (timed runs), ``memory_mb`` (overall, when printed),
        ``run_order`` (per-op rows of the last profile) and ``by_node_type`` (per-op-type rows);
        also ``p5_ms``/``p50_ms``/``p95_ms`` and ``peak_memory_mb`` when the tool printed
        them. A value the output does not contain is None (e.g. ``min_ms`` when only the
        summary line was printed).

    Raises:
        DeviceError: when the text has no timings or says that benchmarking failed; the
            message quotes the tool's first error line.
    """
    lines = _clean_lines(text)
    headers = [i for i, line in enumerate(lines) if _RUNNING.match(line)]
    stats = [(i, _stat(line)) for i, line in enumerate(lines) if _STAT.match(line)]

    def stat_after(start: int, stop: int) -> dict | None:
        return next((s for i, s in stats if start < i < stop), None)

    # The tool runs a warm-up phase and then the timed runs, each under a "Running
    # benchmark for ..." header followed by its Stat line; only one phase means no timed runs.
    warmup = timed = None
    if len(headers) >= 2:
        warmup = stat_after(headers[-2], headers[-1])
        timed = stat_after(headers[-1], len(lines))
    elif not headers and stats:
        timed = stats[-1][1]
    summary: dict[str, float] = {}
    for line in lines:
        match = _SUMMARY.search(line)
        if match:
            for label, value in _SUMMARY_PART.findall(match.group(1)):
                key = _SUMMARY_KEYS.get(label.strip().lower())
                if key:
                    summary[key] = float(value)
    if timed is None and "avg" in summary:
        # Only the summary (and perhaps the profiler's totals): take the statistics of the
        # profiled runs, the last "Timings (microseconds): count=..." line.
        totals = [line for line in lines if line.startswith("Timings (microseconds): count=")]
        timed = _stat(totals[-1].split(":", 1)[1]) if totals else None
    failed = any(re.match(r"(?:ERROR: )?Benchmarking failed", line) for line in lines)
    if failed or ("avg" not in summary and (timed is None or "avg" not in timed)):
        raise DeviceError(f"No benchmark timings in the output: {_failure(lines)}")
    timed = timed or {}
    warmup = warmup or {}
    session = next((_SESSION.match(line) for line in lines if _SESSION.match(line)), None)
    init_us = summary.get("init", float(session.group(1)) * 1e3 if session else None)

    def ms(value: float | None) -> float | None:
        return None if value is None else value / 1e3

    result = {
        "init_ms": ms(init_us),
        "first_ms": ms(summary.get("first", warmup.get("first"))),
        "warmup_avg_ms": ms(summary.get("warmup", warmup.get("avg"))),
        "avg_ms": ms(summary.get("avg", timed.get("avg"))),
        "min_ms": ms(timed.get("min")),
        "max_ms": ms(timed.get("max")),
        "std_ms": ms(timed.get("std")),
        "count": int(timed["count"]) if "count" in timed else None,
    }
    for key, name in (("p5", "p5_ms"), ("median", "p50_ms"), ("p95", "p95_ms")):
        if key in timed:
            result[name] = ms(timed[key])
    joined = "\n".join(lines)
    memory = _MEMORY.search(joined)
    if memory:
        result["memory_mb"] = float(memory.group(2))
    peak = _PEAK.search(joined)
    if peak:
        result["peak_memory_mb"] = float(peak.group(1))
    # The profiler prints an initialization profile and then the inference profile; keep the
    # first tables after the latter (the primary graph's; subgraphs and "Delegate internal"
    # tables follow it).
    marker = max(
        (i for i, line in enumerate(lines) if "Profiling Info for Regular Benchmark Runs" in line),
        default=-1,
    )
    body = lines[marker + 1 :] if marker >= 0 else lines
    result["run_order"] = _table(body, "Run Order")
    result["by_node_type"] = _table(body, "Summary by node type")
    return result


def benchmark_command(remote_binary: str, remote_model: str, *, threads: int, num_runs: int,
                      warmup_runs: int, op_profiling: bool, use_indirect_bgemm: bool,
                      use_xnnpack: bool = False) -> str:  # fmt: skip
    """The shell command that runs one benchmark on the device."""
    flags = [
        f"--graph={remote_model}",
        f"--num_threads={threads}",
        f"--num_runs={num_runs}",
        f"--warmup_runs={warmup_runs}",
        f"--use_indirect_bgemm={'true' if use_indirect_bgemm else 'false'}",
        f"--use_xnnpack={'true' if use_xnnpack else 'false'}",
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
    xnnpack: Sequence[bool] = (True,),
    adb: str = "adb",
    ssh: str = "ssh",
    scp: str = "scp",
) -> dict:
    """Benchmarks flatbuffers on a phone (adb) or an ARM64 Linux board (ssh).

    ``xnnpack`` lists the settings of ``--use_xnnpack`` to run (XNNPACK for the float
    layers; on the x86 host it makes MeliusNet22 about 5 % faster).

    Returns:
        dict with ``transport``, ``device``, ``rows`` (one per model x threads x XNNPACK
        setting, each the parsed output plus ``model``, ``threads``, ``xnnpack``,
        ``runtime``) and ``commands`` (what ran).
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
            for use_xnnpack in xnnpack:
                command = benchmark_command(
                    remote_binary, remote_model, threads=n, num_runs=num_runs,
                    warmup_runs=warmup_runs, op_profiling=op_profiling,
                    use_indirect_bgemm=use_indirect_bgemm, use_xnnpack=use_xnnpack,
                )  # fmt: skip
                commands.append(command)
                parsed = parse_benchmark_output(runner.shell(command))
                runtime = f"lce_benchmark_model ({transport}{', XNNPACK' if use_xnnpack else ''})"
                rows.append({"model": Path(model).stem, "threads": n, "xnnpack": use_xnnpack,
                             "runtime": runtime, **parsed})  # fmt: skip
    return {"transport": transport, "device": device, "rows": rows, "commands": commands}
