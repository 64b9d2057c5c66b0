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
import resource
import subprocess
import sys
import tempfile

TICK = os.sysconf("SC_CLK_TCK")

DEFAULT_PROCS = (
    r"^(annex|annex-edge|annex-worker|annex-control-p\w*|postgres|wasmtime|stack)$"
)


def read_all(base="/proc"):
    """pid -> (name, parent pid, cpu seconds) for every process under base."""
    out = {}
    try:
        entries = os.listdir(base)
    except OSError:
        return out
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"{base}/{entry}/stat", "rb") as f:
                raw = f.read().decode("utf-8", "replace")
        except OSError:
            continue
        # The name is in parentheses and may itself hold spaces or ')'.
        start, end = raw.find("("), raw.rfind(")")
        name = raw[start + 1 : end]
        fields = raw[end + 2 :].split()
        # Fields after the name: state 0, ppid 1, utime 11, stime 12.
        utime, stime = int(fields[11]), int(fields[12])
        out[int(entry)] = (name, int(fields[1]), (utime + stime) / TICK)
    return out


def read_threads(pid, name):
    """(pid, tid) -> (process/thread name, cpu seconds) for one process's threads."""
    out = {}
    for tid, (thread, _, cpu) in read_all(f"/proc/{pid}/task").items():
        out[(pid, tid)] = (f"{name}/{thread}", cpu)
    return out


def snapshot(pattern, roots, threads):
    """key -> (name, cpu seconds) for the matching processes (or, with
    threads, their threads); with roots, only those processes and their
    descendants."""
    procs = read_all()

    def under_root(pid):
        seen = set()
        while pid and pid not in seen:
            if pid in roots:
                return True
            seen.add(pid)
            pid = procs[pid][1] if pid in procs else 0
        return False

    out = {}
    for pid, (name, _, cpu) in procs.items():
        if not pattern.search(name) or (roots and not under_root(pid)):
            continue
        if threads:
            out.update(read_threads(pid, name))
        else:
            out[pid] = (name, cpu)
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
    ap.add_argument(
        "--tree",
        type=int,
        action="append",
        default=[],
        help="count only this process and its descendants (repeatable; e.g. the pid of "
        "`annex dev`, whose Postgres is its child, or of the e2e `stack`)",
    )
    ap.add_argument(
        "--threads",
        action="store_true",
        help="break each process down by thread name (annex dev runs the edge, control "
        "plane and worker on one runtime; guest threads are named annex-guest)",
    )
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
        roots = set(args.tree)
        before = snapshot(pattern, roots, args.threads)
        harness_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run(cmd + ["--json", report], env=env, check=True)
        harness_after = resource.getrusage(resource.RUSAGE_CHILDREN)
        after = snapshot(pattern, roots, args.threads)
        requests, errors, runs = requests_in(report)
    if requests == 0:
        raise SystemExit("the measured run made no requests")

    groups = {}
    for key, (name, cpu) in after.items():
        start = before.get(key, (name, 0.0))[1]
        groups[name] = groups.get(name, 0.0) + (cpu - start)
    # The harness is this script's child and has exited by now: its CPU
    # comes from the children's rusage, not /proc.
    harness = (harness_after.ru_utime + harness_after.ru_stime) - (
        harness_before.ru_utime + harness_before.ru_stime
    )
    groups["annex-loadtest (harness)"] = harness
    # A process that exited took its final CPU reading with it.
    gone = sum(1 for key in before if key not in after)

    deployment = sum(cpu for name, cpu in groups.items() if "(harness)" not in name)
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
    lines.append(
        f"| **deployment** (all but the harness) | {deployment:.2f} | "
        f"**{deployment / requests * 1e6:.1f}** | {deployment / total * 100 if total else 0:.0f} % |"
    )
    if gone:
        lines.append("")
        lines.append(f"{gone} matching process(es) or thread(s) exited during the run; not counted")
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        with open(args.markdown, "w", encoding="utf-8") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
