#!/usr/bin/env python3
"""CPU per request, summed over every process of a deployment, from /proc.

Runs an annex-loadtest command twice: once as a warm-up (discarded), then
measured. Around the measured run it reads utime + stime of every process
whose name matches --procs (the edge, workers, control planes, Postgres and
the load generator itself), and divides each process group's CPU by the
number of requests the load generator reports.

Usage:
    scripts/cpu-per-request.py [--procs REGEX] [--warmup 3s] [--duration 10s] \
        [--markdown FILE] -- LOADTEST_BIN SUBCOMMAND ARGS...

Do not pass --warmup, -d or --json in ARGS: the script sets them (through
ANNEX_LOADTEST_WARMUP / ANNEX_LOADTEST_DURATION and --json).

The figures are CPU time, not wall time, so they hold on a busy machine
better than rates do; processes that start or exit during the run are
counted from or to the snapshot they appear in (a Postgres backend that
exits mid-run loses its share; the count of such processes is printed).
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

TICK = os.sysconf("SC_CLK_TCK")

DEFAULT_PROCS = (
    r"^(annex|annex-edge|annex-worker|annex-control-p\w*|postgres|annex-loadtest|wasmtime|stack)$"
)


def snapshot(pattern):
    """pid -> (name, cpu seconds) for every process whose name matches."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                raw = f.read().decode("utf-8", "replace")
        except OSError:
            continue
        # The name is in parentheses and may itself hold spaces or ')'.
        start, end = raw.find("("), raw.rfind(")")
        name = raw[start + 1 : end]
        if not pattern.search(name):
            continue
        fields = raw[end + 2 :].split()
        # Fields after the name: state is index 0, utime 11, stime 12.
        utime, stime = int(fields[11]), int(fields[12])
        out[int(entry)] = (name, (utime + stime) / TICK)
    return out


def requests_in(report_path):
    with open(report_path, encoding="utf-8") as f:
        doc = json.load(f)
    output = doc.get("output", doc)
    runs = output.get("runs") if isinstance(output, dict) else None
    if runs is None:
        raise SystemExit(f"{report_path}: no 'runs' in the report; use `http` or `scenario`")
    return sum(r["requests"] for r in runs), sum(r["errors_total"] for r in runs), runs


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--procs", default=DEFAULT_PROCS, help="process-name regex")
    ap.add_argument("--warmup", default="3s")
    ap.add_argument("--duration", default="10s")
    ap.add_argument("--markdown", help="also write the table to this file")
    ap.add_argument("command", nargs=argparse.REMAINDER)
    args = ap.parse_args()
    cmd = args.command[1:] if args.command[:1] == ["--"] else args.command
    if len(cmd) < 2:
        ap.error("give the annex-loadtest binary and its subcommand after --")
    pattern = re.compile(args.procs)

    env = dict(os.environ, ANNEX_LOADTEST_WARMUP="0s", ANNEX_LOADTEST_DURATION=args.warmup)
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)

    env["ANNEX_LOADTEST_DURATION"] = args.duration
    with tempfile.TemporaryDirectory() as tmp:
        report = os.path.join(tmp, "run.json")
        before = snapshot(pattern)
        subprocess.run(cmd + ["--json", report], env=env, check=True)
        after = snapshot(pattern)
        requests, errors, runs = requests_in(report)
    if requests == 0:
        raise SystemExit("the measured run made no requests")

    groups = {}
    for pid, (name, cpu) in after.items():
        start = before.get(pid, (name, 0.0))[1]
        groups[name] = groups.get(name, 0.0) + (cpu - start)
    # A process that exited took its final CPU reading with it.
    gone = sum(1 for pid in before if pid not in after)

    total = sum(groups.values())
    rate = sum(r["rps"] for r in runs)
    lines = [
        f"measured: {requests} requests ({errors} errors), {rate:,.0f} req/s, duration {args.duration}",
        "",
        "| process | CPU s | µs per request | share |",
        "|---|---:|---:|---:|",
    ]
    for name, cpu in sorted(groups.items(), key=lambda kv: -kv[1]):
        share = cpu / total * 100 if total else 0.0
        lines.append(f"| {name} | {cpu:.2f} | {cpu / requests * 1e6:.1f} | {share:.0f} % |")
    lines.append(f"| **all** | {total:.2f} | **{total / requests * 1e6:.1f}** | 100 % |")
    if gone:
        lines.append("")
        lines.append(f"{gone} matching process(es) exited during the run; their CPU is not counted")
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        with open(args.markdown, "w", encoding="utf-8") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
