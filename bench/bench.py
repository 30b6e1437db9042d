#!/usr/bin/env python3
"""Side-by-side benchmark: the same workloads against rtcd-rs and the real rtcd.

Each server runs pinned to one core (taskset), the load generator (rtcd-loadtest) on the
other, all inside one network namespace that has only loopback. Every step of a workload's
ramp runs --runs times per server (servers alternate), a fresh server process each time;
the table reports medians. The ramp stops at the first step whose median breaks the SLO
(audio loss > 0.5 %, video loss > 1 %, audio latency p99 > 10 ms, or any ICE/DTLS failure),
or where the generator itself is saturated (then capacity is "at least" the last step).

Nothing here is a test: it prints and writes figures, it never fails on them.

  bench/bench.py [--workloads w2,w4,w1,w5,churn] [--runs 3] [--window 10] [--out DIR]
                 [--flamegraph w2] [--max-steps N]

Binaries come from RTCD_BIN, RTCD_REF_BIN and LOADTEST_BIN (the Makefile sets them).
"""
import argparse
import datetime
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# Workloads shaped like the published ones (docs/performance.md §6), scaled to 2 cores:
# (id, description, loadtest args for one step value, step values).
WORKLOADS = {
    "w2": ("W2-like: calls of 10, 2 unmuted",
           lambda n: ["--calls", str(n), "--users-per-call", "10", "--unmuted", "2"],
           "calls", [2, 4, 8, 16, 32, 48, 64, 96]),
    "w4": ("W4-like: 1:1 calls, both unmuted",
           lambda n: ["--calls", str(n), "--users-per-call", "2", "--unmuted", "2"],
           "calls", [10, 20, 40, 80, 160, 240, 320]),
    "w1": ("W1-like: one large call, 2 unmuted",
           lambda n: ["--calls", "1", "--users-per-call", str(n), "--unmuted", "2"],
           "participants", [25, 50, 100, 200, 300, 400]),
    "w5": ("W5-like: calls of 10, 1 unmuted + screen share (VP8 simulcast h/l)",
           lambda n: ["--calls", str(n), "--users-per-call", "10", "--unmuted", "1", "--screen"],
           "calls", [1, 2, 4, 8, 12, 16]),
    "churn": ("Churn: 8 calls of 10 (2 unmuted) + visitors joining/s, 3 s each",
              lambda n: ["--calls", "8", "--users-per-call", "10", "--unmuted", "2",
                         "--churn", str(n), "--visit", "3"],
              "joins/s", [2, 5, 10, 20, 40]),
}

SLO = {"audio_loss_pct": 0.5, "video_loss_pct": 1.0, "audio_p99_ms": 10.0}
GENERATOR_SATURATED_PCT = 85.0


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def wait_http(port, proc, limit=15.0):
    end = time.time() + limit
    while time.time() < end:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"GET /version HTTP/1.0\r\nHost: x\r\n\r\n")
                if b" 200 " in s.recv(64):
                    return True
        except OSError:
            pass
        time.sleep(0.1)
    return False


def stop(proc):
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class Env:
    def __init__(self, args):
        self.args = args
        n = os.cpu_count() or 1
        self.server_cpu = "0"
        self.gen_cpu = "1" if n > 1 else "0"
        self.gomaxprocs = "1"
        if args.scaling:
            # Every core for the server (rtcd-rs: one engine shard per core; rtcd: GOMAXPROCS),
            # shared with the generator.
            self.server_cpu = self.gen_cpu = f"0-{n - 1}"
            self.gomaxprocs = str(n)
        if n < 2:
            log("bench: one CPU only: server and generator share it; figures are not comparable")
        self.work = tempfile.mkdtemp(prefix="rtcd-bench-")
        self.port_seq = 0

    def server(self, which, perf_out=None):
        binary = {"rtcd-rs": os.environ["RTCD_BIN"], "rtcd": os.environ["RTCD_REF_BIN"]}[which]
        # Fresh ports per server: rtcd takes ICE ports in 80–49151 only.
        self.port_seq += 1
        http = 20000 + self.port_seq
        ice = 30000 + self.port_seq
        store = tempfile.mkdtemp(dir=self.work)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/root"),
            "GOMAXPROCS": self.gomaxprocs,
            "RTCD_API_HTTP_LISTENADDRESS": f"127.0.0.1:{http}",
            "RTCD_API_SECURITY_ALLOWSELFREGISTRATION": "true",
            "RTCD_RTC_ICEPORTUDP": str(ice),
            "RTCD_RTC_ICEPORTTCP": str(ice),
            "RTCD_STORE_DATASOURCE": store,
            "RTCD_LOGGER_ENABLEFILE": "false",
            "RTCD_LOGGER_ENABLECONSOLE": "true",
            "RTCD_LOGGER_CONSOLELEVEL": "ERROR",
        }
        cmd = ["taskset", "-c", self.server_cpu, binary]
        logf = open(os.path.join(store, "server.log"), "w")
        proc = subprocess.Popen(cmd, env=env, stdout=logf, stderr=subprocess.STDOUT, cwd=store)
        if not wait_http(http, proc):
            stop(proc)
            with open(os.path.join(store, "server.log")) as f:
                tail = f.read()[-3000:]
            raise RuntimeError(f"{which} did not answer /version:\n{tail}")
        perf = None
        if perf_out:
            perf = subprocess.Popen(["perf", "record", "-F", "499", "-g", "--call-graph", "dwarf,16384",
                                     "-o", perf_out, "-p", str(proc.pid)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(0.5)
        return proc, http, perf

    def run_once(self, which, wl, value, perf_out=None):
        argsf = WORKLOADS[wl][1]
        proc, http, perf = self.server(which, perf_out)
        out = os.path.join(self.work, f"{wl}-{value}-{which}-{time.time_ns()}.json")
        cmd = ["taskset", "-c", self.gen_cpu, os.environ["LOADTEST_BIN"],
               "--url", f"http://127.0.0.1:{http}", "--server-pid", str(proc.pid),
               "--duration", str(self.args.window), "--warmup", "2", "--ramp", "100",
               "--json", out] + argsf(value)
        threads = None
        try:
            r = subprocess.run(cmd, capture_output=True, text=True,
                               timeout=self.args.window + 180)
            threads = thread_cpu(proc.pid)
        finally:
            if perf:
                perf.send_signal(signal.SIGINT)
                try:
                    perf.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    perf.kill()
            stop(proc)
        if r.returncode != 0 or not os.path.exists(out):
            log(f"bench: loadtest failed ({r.returncode}): {r.stderr.strip()[-2000:]}")
            return None
        with open(out) as f:
            rep = json.load(f)
        rep["server_threads"] = threads
        return rep


def thread_cpu(pid):
    """CPU seconds (user + system) of each thread of `pid`, summed by thread name, from
    /proc/<pid>/task/*/stat (USER_HZ = 100)."""
    out = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        name = stat[stat.index("(") + 1: stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        secs = (int(fields[11]) + int(fields[12])) / 100.0
        out[name] = round(out.get(name, 0.0) + secs, 2)
    return out


def scaling(env, wl, value, args):
    """One step of `wl` on both servers with every core: the server's CPU per thread."""
    rows = {}
    for which in ("rtcd-rs", "rtcd"):
        log(f"bench: scaling {wl} {WORKLOADS[wl][2]}={value} on {which} (cores {env.server_cpu})")
        rep = env.run_once(which, wl, value)
        if not rep:
            rows[which] = {"error": "run failed"}
            continue
        rows[which] = {"median": metrics(rep), "threads": rep.get("server_threads") or {}}
    return {"id": wl, "value": value, "unit": WORKLOADS[wl][2], "servers": rows}


def render_scaling(sc, meta):
    lines = [f"# Scaling: {sc['id']} at {sc['unit']}={sc['value']}, every core for the server",
             "", f"{meta['date']}, commit {meta['commit']}, {meta['cpu']} ({meta['cpus']} CPUs), "
             f"cores {meta['server_cpu']} shared with the generator, window {meta['window']} s.", "",
             f"Command: `{meta['command']}`", ""]
    for which, row in sc["servers"].items():
        if "error" in row:
            lines.append(f"- {which}: {row['error']}")
            continue
        m = row["median"]
        lines.append(f"## {which}: {m['forwarded_pps']:.0f} pkt/s forwarded, server CPU {m['cpu_pct'] or 0:.1f} % "
                     f"(of one core), audio loss {m['audio_loss_pct']:.3f} %, p99 {m['audio_p99_ms']} ms")
        lines += ["", "| thread | CPU s |", "|---|---:|"]
        for name, secs in sorted(row["threads"].items(), key=lambda kv: -kv[1]):
            lines.append(f"| {name} | {secs:.2f} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def metrics(rep):
    """The flat figures of one run."""
    s, srv, gen = rep["summary"], rep.get("server") or {}, rep["generator"]
    a, v = s.get("audio") or {}, s.get("video") or {}
    al, vl = a.get("latency_ms") or {}, v.get("latency_ms") or {}
    t = s.get("join_to_first_packet_ms") or {}
    return {
        "participants": s["participants"],
        "forwarded_pps": s["forwarded_pps"],
        "cpu_pct": srv.get("cpu_pct"),
        "cpu_us_per_pkt": srv.get("cpu_us_per_forwarded_packet"),
        "rss_steady_mib": (srv.get("rss_steady_kib") or 0) / 1024,
        "rss_peak_mib": (srv.get("rss_peak_kib") or 0) / 1024,
        "rss_per_participant_kib": srv.get("rss_per_participant_kib"),
        "threads": srv.get("threads"),
        "audio_loss_pct": a.get("loss_pct", 0.0),
        "audio_p50_ms": al.get("p50"), "audio_p99_ms": al.get("p99"), "audio_p999_ms": al.get("p999"),
        "jitter_p99_ms": a.get("jitter_ms_p99"),
        "video_loss_pct": v.get("loss_pct"),
        "video_p99_ms": vl.get("p99"),
        "join_first_p50_ms": t.get("p50"), "join_first_p99_ms": t.get("p99"),
        "failures": s["ice_dtls_failures"] + s["closed_by_server"],
        "generator_cpu_pct": gen["cpu_pct"],
    }


def median(values):
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def slo_breaches(m):
    out = []
    if m["failures"]:
        out.append(f"{m['failures']:.0f} ICE/DTLS failures")
    if m["audio_loss_pct"] is not None and m["audio_loss_pct"] > SLO["audio_loss_pct"]:
        out.append(f"audio loss {m['audio_loss_pct']:.2f}%")
    if m["video_loss_pct"] is not None and m["video_loss_pct"] > SLO["video_loss_pct"]:
        out.append(f"video loss {m['video_loss_pct']:.2f}%")
    if m["audio_p99_ms"] is not None and m["audio_p99_ms"] > SLO["audio_p99_ms"]:
        out.append(f"audio p99 {m['audio_p99_ms']:.1f} ms")
    return out


def bench_workload(env, wl, args):
    desc, _, unit, steps = WORKLOADS[wl]
    steps = steps[: args.max_steps]
    result = {"id": wl, "description": desc, "unit": unit, "steps": [], "capacity": {}}
    alive = {"rtcd-rs": True, "rtcd": True}
    for value in steps:
        step = {"value": value, "servers": {}}
        runs = {k: [] for k in alive if alive[k]}
        if not runs:
            break
        for i in range(args.runs):
            for which in list(runs):
                log(f"bench: {wl} {unit}={value} run {i + 1}/{args.runs} on {which}")
                rep = env.run_once(which, wl, value)
                if rep:
                    runs[which].append(rep)
        for which, reps in runs.items():
            if not reps:
                step["servers"][which] = {"error": "every run failed", "runs": []}
                alive[which] = False
                result["capacity"][which] = result["capacity"].get(which) or {"value": None, "note": "failed to run"}
                continue
            ms = [metrics(r) for r in reps]
            med = {k: median([m[k] for m in ms]) for k in ms[0]}
            breaches = slo_breaches(med)
            gen_bound = (med["generator_cpu_pct"] or 0) >= GENERATOR_SATURATED_PCT
            step["servers"][which] = {"median": med, "runs": reps, "slo_breaches": breaches,
                                      "generator_bound": gen_bound}
            log(f"bench:   {which}: fwd {med['forwarded_pps']:.0f} pkt/s, cpu {med['cpu_pct'] or 0:.1f}%, "
                f"{(med['cpu_us_per_pkt'] or 0):.2f} µs/pkt, loss {med['audio_loss_pct']:.3f}%, "
                f"p99 {med['audio_p99_ms']} ms, gen {med['generator_cpu_pct']:.0f}% {breaches or ''}")
            if breaches:
                alive[which] = False
            elif gen_bound:
                alive[which] = False
                result["capacity"][which] = {"value": value, "participants": med["participants"],
                                             "forwarded_pps": med["forwarded_pps"], "at_least": True}
            else:
                result["capacity"][which] = {"value": value, "participants": med["participants"],
                                             "forwarded_pps": med["forwarded_pps"], "at_least": False}
        result["steps"].append(step)
    for which in ("rtcd-rs", "rtcd"):
        cap = result["capacity"].setdefault(which, {"value": None})
        if alive.get(which) and cap.get("value") == steps[-1]:
            cap["at_least"] = True  # never broke the SLO within the ramp
    return result


def profile(env, wl, value, out_dir, stamp):
    data = os.path.join(env.work, "perf.data")
    rep = env.run_once("rtcd-rs", wl, value, perf_out=data)
    if not rep or not os.path.exists(data):
        log("bench: profiling failed")
        return None
    report = subprocess.run(["perf", "report", "-i", data, "--stdio", "--no-children",
                             "--percent-limit", "1", "--sort", "symbol", "-g", "none"],
                            capture_output=True, text=True).stdout
    txt = os.path.join(out_dir, f"{stamp}-profile-{wl}.txt")
    with open(txt, "w") as f:
        f.write(report)
    folded = os.path.join(env.work, "folded.txt")
    script = subprocess.run(["perf", "script", "-i", data], capture_output=True, text=True).stdout
    stacks = collapse(script)
    with open(folded, "w") as f:
        f.write(stacks)
    with open(txt, "a") as f:
        f.write("\n# Inclusive share of samples whose stack passes through each frame (top 80)\n")
        f.write(inclusive(stacks, 80))
    svg = None
    inferno = shutil.which("inferno-flamegraph")
    if inferno:
        svg = os.path.join(out_dir, f"{stamp}-flamegraph-{wl}.svg")
        with open(folded) as fi, open(svg, "w") as fo:
            subprocess.run([inferno, "--title", f"rtcd-rs {wl} {value}"], stdin=fi, stdout=fo)
    else:
        log("bench: inferno-flamegraph not found: wrote the perf report only")
    return {"report": os.path.relpath(txt, ROOT), "flamegraph": svg and os.path.relpath(svg, ROOT),
            "workload": wl, "value": value}


# Runtime, std and thread-entry frames: every sample passes through them, they say nothing.
GENERIC_FRAMES = ("tokio::runtime", "std::", "core::", "alloc::", "catch_unwind", "call_once", "do_call",
                  "start_thread", "clone3", "{closure", "<std::", "<alloc::", "<core::", "<tokio::runtime",
                  "run", "poll<", "poll_", "with<", "with_mut<", "set<", "set_scheduler", "try_with<",
                  "enter_runtime", "budget<", "__rust_begin", "[unknown]", "main", "__libc_start")


def inclusive(folded, top):
    """Share of samples whose stack contains each frame (perf report --children, from stacks)."""
    total, seen = 0, {}
    for line in folded.splitlines():
        stack, _, n = line.rpartition(" ")
        n = int(n)
        total += n
        for frame in set(stack.split(";")):
            if not frame.startswith(GENERIC_FRAMES):
                seen[frame] = seen.get(frame, 0) + n
    rows = sorted(seen.items(), key=lambda kv: -kv[1])[:top]
    return "".join(f"{100.0 * v / max(total, 1):6.2f}%  {k[:150]}\n" for k, v in rows)


def collapse(script):
    """perf script output → folded stacks (root;...;leaf count)."""
    counts, stack = {}, []
    for line in script.splitlines() + [""]:
        if not line.strip():
            if stack:
                key = ";".join(reversed(stack))
                counts[key] = counts.get(key, 0) + 1
            stack = []
        elif line[0] in " \t":
            parts = line.strip().split(None, 1)
            if len(parts) == 2:
                stack.append(parts[1].split(" (")[0].split("+0x")[0])
    return "".join(f"{k} {v}\n" for k, v in counts.items())


def fmt(v, spec=".1f"):
    return "–" if v is None else format(v, spec)


def ratio(a, b):
    return "–" if a is None or b in (None, 0) else f"{a / b:.2f}"


def render(results, meta):
    lines = [f"# Benchmark {meta['date']} ({meta['commit']})", "",
             f"- CPU: {meta['cpu']}, {meta['cpus']} CPUs; kernel {meta['kernel']}",
             f"- servers: rtcd-rs `{meta['rtcd_rs']}`, rtcd `{meta['rtcd']}`; each pinned to CPU {meta['server_cpu']}, "
             f"the generator to CPU {meta['gen_cpu']}, one network namespace (loopback)",
             f"- command: `{meta['command']}`",
             f"- medians of {meta['runs']} runs per step, {meta['window']} s windows; SLO: audio loss ≤ 0.5 %, "
             "video loss ≤ 1 %, audio p99 ≤ 10 ms, no ICE/DTLS failure", ""]
    lines += ["## Capacity at SLO", "",
              "| Workload | unit | rtcd-rs | rtcd | ratio (us / rtcd) | rtcd-rs fwd pkt/s | rtcd fwd pkt/s |",
              "|---|---|---|---|---|---|---|"]
    for r in results:
        c = r["capacity"]

        def cap(w):
            x = c.get(w) or {}
            if x.get("value") is None:
                return "none"
            return ("≥ " if x.get("at_least") else "") + str(x["value"])
        us, ref = c.get("rtcd-rs") or {}, c.get("rtcd") or {}
        lines.append(f"| {r['description']} | {r['unit']} | {cap('rtcd-rs')} | {cap('rtcd')} | "
                     f"{ratio(us.get('value'), ref.get('value'))} | {fmt(us.get('forwarded_pps'), '.0f')} | "
                     f"{fmt(ref.get('forwarded_pps'), '.0f')} |")
    lines += ["", "## Per step (medians)", ""]
    cols = [("forwarded_pps", "fwd pkt/s", ".0f"), ("cpu_pct", "CPU %", ".1f"),
            ("cpu_us_per_pkt", "CPU µs/pkt", ".2f"), ("rss_per_participant_kib", "RSS KiB/participant", ".0f"),
            ("rss_peak_mib", "peak RSS MiB", ".1f"), ("audio_loss_pct", "audio loss %", ".3f"),
            ("audio_p50_ms", "lat p50 ms", ".2f"), ("audio_p99_ms", "lat p99 ms", ".2f"),
            ("audio_p999_ms", "lat p99.9 ms", ".2f"), ("video_loss_pct", "video loss %", ".3f"),
            ("join_first_p50_ms", "join→1st p50 ms", ".0f"), ("join_first_p99_ms", "join→1st p99 ms", ".0f"),
            ("failures", "failures", ".0f"), ("generator_cpu_pct", "gen CPU %", ".0f")]
    for r in results:
        lines += [f"### {r['description']}", "",
                  "| " + r["unit"] + " | metric | rtcd-rs | rtcd | ratio |", "|---|---|---|---|---|"]
        for st in r["steps"]:
            us = (st["servers"].get("rtcd-rs") or {}).get("median") or {}
            ref = (st["servers"].get("rtcd") or {}).get("median") or {}
            for key, name, spec in cols:
                a, b = us.get(key), ref.get(key)
                if a is None and b is None:
                    continue
                lines.append(f"| {st['value']} | {name} | {fmt(a, spec)} | {fmt(b, spec)} | {ratio(a, b)} |")
            for w in ("rtcd-rs", "rtcd"):
                s = st["servers"].get(w) or {}
                notes = list(s.get("slo_breaches") or [])
                if s.get("generator_bound"):
                    notes.append("generator saturated")
                if s.get("error"):
                    notes.append(s["error"])
                if notes:
                    lines.append(f"| {st['value']} | {w}: SLO | {'; '.join(notes)} | | |")
        lines.append("")
    if meta.get("profile"):
        p = meta["profile"]
        lines += ["## Profile", "", f"rtcd-rs on {p['workload']} at {p['value']}: `{p['report']}`"
                  + (f", flame graph `{p['flamegraph']}`" if p.get("flamegraph") else ""), ""]
    return "\n".join(lines) + "\n"


def write_report(out, stamp, md, doc):
    """Writes <out>/<stamp>.md and .json and prints the markdown."""
    with open(os.path.join(out, stamp + ".md"), "w") as f:
        f.write(md)
    with open(os.path.join(out, stamp + ".json"), "w") as f:
        json.dump(doc, f, indent=1)
    print(md)
    log(f"bench: wrote {out}/{stamp}.md and .json")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workloads", default="w2,w4,w1,w5,churn")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--window", type=float, default=10.0)
    ap.add_argument("--max-steps", type=int, default=10)
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "benchmarks"))
    ap.add_argument("--flamegraph", default="", help="workload to profile rtcd-rs on (perf)")
    ap.add_argument("--flamegraph-step", type=int, default=None)
    ap.add_argument("--scaling", action="store_true",
                    help="give the server every core and report its CPU per thread (one step)")
    ap.add_argument("--scaling-step", type=int, default=None)
    args = ap.parse_args()
    for k in ("RTCD_BIN", "RTCD_REF_BIN", "LOADTEST_BIN"):
        if not os.environ.get(k) or not os.access(os.environ[k], os.X_OK):
            sys.exit(f"bench: {k} must name an executable")
    wls = [w for w in args.workloads.split(",") if w]
    for w in wls:
        if w not in WORKLOADS:
            sys.exit(f"bench: unknown workload {w!r} (known: {', '.join(WORKLOADS)})")
    if args.runs < 1 or args.window <= 0:
        sys.exit("bench: --runs must be ≥ 1 and --window > 0")
    subprocess.run(["ip", "link", "set", "lo", "up"], check=False)
    env = Env(args)
    os.makedirs(args.out, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip() or "unknown"
    dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    meta = {
        "date": now.strftime("%Y-%m-%d %H:%M UTC"), "commit": commit + ("-dirty" if dirty else ""),
        "cpu": cpu, "cpus": os.cpu_count(), "kernel": os.uname().release,
        "rtcd_rs": os.path.basename(os.environ["RTCD_BIN"]), "rtcd": os.path.basename(os.environ["RTCD_REF_BIN"]),
        "server_cpu": env.server_cpu, "gen_cpu": env.gen_cpu, "runs": args.runs, "window": args.window,
        "command": os.environ.get("BENCH_COMMAND", "bench/bench.py " + " ".join(sys.argv[1:])),
    }
    results = []
    if args.scaling:
        wl = wls[0]
        value = args.scaling_step or WORKLOADS[wl][3][min(3, len(WORKLOADS[wl][3]) - 1)]
        try:
            sc = scaling(env, wl, value, args)
        finally:
            shutil.rmtree(env.work, ignore_errors=True)
        write_report(args.out, now.strftime("%Y-%m-%d-%H%M") + "-" + commit + "-scaling",
                     render_scaling(sc, meta), {"meta": meta, "scaling": sc})
        return
    try:
        for w in wls:
            results.append(bench_workload(env, w, args))
        if args.flamegraph:
            wl = args.flamegraph
            if wl not in WORKLOADS:
                sys.exit(f"bench: unknown workload {wl!r} for --flamegraph")
            value = args.flamegraph_step or WORKLOADS[wl][3][min(2, len(WORKLOADS[wl][3]) - 1)]
            meta["profile"] = profile(env, wl, value, args.out, now.strftime("%Y-%m-%d"))
    finally:
        write_report(args.out, now.strftime("%Y-%m-%d-%H%M") + "-" + commit,
                     render(results, meta), {"meta": meta, "workloads": results})
        shutil.rmtree(env.work, ignore_errors=True)


if __name__ == "__main__":
    main()
