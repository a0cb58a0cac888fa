#!/usr/bin/env python3
"""diglot's benchmark orchestrator (stdlib only). Started by run.sh, which installs the tools.

What it does, in one process that owns every server it starts:
- one mock upstream (examples/mock_upstream.rs) that every row of every scenario calls, so
  "direct", "diglot", "nginx" and "LiteLLM" differ only by the hop in front of it;
- diglot instances in front of it (one per upstream kind and scenario, each told by a
  profile's [upstream.headers] which x-mock-* knobs to send, since diglot does not forward
  client headers), an nginx proxy_pass hop with a keep-alive pool, and LiteLLM's proxy;
- oha for latency (open loop at fixed rates, --latency-correction so a slow answer cannot
  hide the requests it delayed) and for maximum throughput (closed loop, 64 connections);
- small stdlib clients for time to first token and for thousands of slow open streams.

The machine has few cores and the load generator, the mock and the gateway share them. No
process is pinned with taskset: pinning would give each at most one core, cap the gateway
below what it gets in production, and make "direct" (oha + mock) and "via a proxy" (oha +
proxy + mock) run on different CPU budgets. Unpinned, every row pays the same sharing, and
the max-throughput rows are in effect "CPU cost per request of the whole path".
"""

import argparse
import asyncio
import atexit
import ctypes
import hashlib
import datetime
import glob
import http.client
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

MODEL = "llama3.2"
PROMPT = [{"role": "user", "content": "Why is the sky blue?"}]
CHUNK_TEXT = "hello"  # the mock's default chunk text is "hello "; clients look for it
CLK_TCK = os.sysconf("SC_CLK_TCK")

# Full and smoke settings. The smoke run only proves that every path still works end to
# end (and fails CI when a diglot request fails); its numbers mean nothing.
MODES = {
    "full": dict(
        duration=10.0,  # seconds measured per oha run
        warmup=2.0,  # seconds of the same load, discarded, before each run
        rates_a=[50, 100, 500, 2000, 5000],  # 50, 100 so LiteLLM has same-rate rows to compare
        rates=[500, 2000, 5000],
        litellm_rates=[50, 100, 500],
        max_conns=64,
        open_conns=64,
        timeout=5.0,  # per request: a wedged peer costs failures, not the run
        stream_chunks=256,
        stream_conns=64,
        ttft_requests=200,
        open_streams=[1000, 10000],
        slow_delay_ms=2000,
    ),
    "smoke": dict(
        duration=1.0,
        warmup=0.0,  # no warm-up: the smoke run checks that paths work, not how fast
        rates_a=[100],
        rates=[100],
        litellm_rates=[20],
        max_conns=8,
        open_conns=8,
        timeout=5.0,
        stream_chunks=64,
        stream_conns=8,
        ttft_requests=20,
        open_streams=[100],
        slow_delay_ms=1000,
    ),
}

# The targets of issue 8, checked in the full run.
TARGET_ADDED_VS_NGINX = 1.5
TARGET_P99_ADDED_MS = 1.0
TARGET_P99_RATE = 2000
TARGET_VS_LITELLM = 20.0
TARGET_CHUNKS_PER_S = 100_000
TARGET_TTFT_ADDED_MS = 0.5
TARGET_IDLE_RSS_MB = 20.0
TARGET_STREAM_KIB = 64.0
# The targets of issue 22 (toward the proxy limit), reported in the full run as ratios
# within it.
TARGET_MAX_VS_NGINX = 0.5
TARGET_HELD_UP_TO = 5000
TARGET_CHUNKS_VS_NGINX = 0.5
TARGET_CPU_S_PER_M_CHUNKS = 3.0
TARGET_TTFT_ADDED_TIGHT_MS = 0.2
TARGET_STREAM_TIGHT_KIB = 24.0
TARGET_IDLE_RSS_MIB = 15.0
TARGET_FEATURES_VS_PLAIN = 0.9
# A row measured while processes outside the benchmark used more than this many cores is
# flagged as noisy.
NOISY_CORES = 0.15


def log(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------
# Processes: everything started here is killed on exit, on an exception and on SIGTERM/INT.

_libc = ctypes.CDLL(None, use_errno=True)
PR_SET_PDEATHSIG = 1


def _die_with_parent():
    # SIGKILL if this orchestrator dies without running its cleanup.
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _child_setup():
    # Own process group, so nginx's workers and LiteLLM's workers go with their parent.
    os.setsid()
    _die_with_parent()


class Fleet:
    def __init__(self, logdir):
        self.logdir = logdir
        self.procs = []  # (name, Popen)
        atexit.register(self.stop_all)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum, _frame):
        log(f"signal {signum}: stopping everything")
        self.stop_all()
        sys.exit(128 + signum)

    def start(self, name, argv, env=None, user=None):
        path = os.path.join(self.logdir, f"{name}.log")
        out = open(path, "wb")
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            preexec_fn=_child_setup,
            user=user and user[0],
            group=user and user[1],
        )
        out.close()
        proc.log_path = path
        self.procs.append((name, proc))
        return proc

    def stop(self, proc):
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        else:
            # The leader is gone; its group (workers) may not be.
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def stop_all(self):
        while self.procs:
            _, proc = self.procs.pop()
            self.stop(proc)


def tail(path, n=20):
    try:
        with open(path, "rb") as f:
            return b"\n".join(f.read().splitlines()[-n:]).decode(errors="replace")
    except OSError:
        return ""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(what, check, proc, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{tail(proc.log_path)}")
        try:
            if check():
                return
        except (OSError, http.client.HTTPException):
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{what} not ready after {timeout:.0f} s:\n{tail(proc.log_path)}")


def http_get_ok(port, path):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", path)
        return conn.getresponse().status == 200
    finally:
        conn.close()


def post(port, path, body, headers=None, timeout=10):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", path, body, {"content-type": "application/json", **(headers or {})})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def stream_end_error(path, body):
    """Why a streamed answer did not end cleanly, or None. A 200 stream can still fail: an
    upstream error mid-stream is a final error event (SSE) or error line (NDJSON), and a cut
    stream lacks its end. SSE must end with `data: [DONE]` and carry no error event; NDJSON
    must end with a `"done": true` line and carry no error line."""
    text = body.decode(errors="replace")
    if path.startswith("/api/"):
        lines = [line for line in text.split("\n") if line.strip()]
        data = lines
    else:
        data = [line[len("data: "):] for line in text.split("\n") if line.startswith("data: ")]
    last = None
    for item in data:
        if item == "[DONE]":
            last = item
            continue
        try:
            last = json.loads(item)
        except ValueError:
            return f"not JSON: {item[:200]!r}"
        if isinstance(last, dict) and "error" in last:
            return f"error in the stream: {item[:300]}"
    if path.startswith("/api/"):
        if not isinstance(last, dict) or last.get("done") is not True:
            return f"no final done line: {text[-300:]!r}"
    elif last != "[DONE]":
        return f"no data: [DONE] at the end: {text[-300:]!r}"
    return None


def check_stream(port, path, body, headers=None):
    """None when a streamed request through `port` answers 200 and ends cleanly; else why."""
    status, answer = post(port, path, body, headers)
    if status != 200:
        return f"HTTP {status}: {answer[:300]!r}"
    return stream_end_error(path, answer)


# ---------------------------------------------------------------------------------------
# /proc readings.


def cpu_seconds(pids):
    """utime + stime of these processes (all their threads), in seconds."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
        except OSError:
            pass
    return total / CLK_TCK


def rss_bytes(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def wait_quiet(pids, timeout=30.0):
    """Waits until these processes use under a tenth of a core."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        c0 = cpu_seconds(pids)
        time.sleep(0.5)
        if cpu_seconds(pids) - c0 < 0.05:
            return


def _cpu_totals():
    """(busy, all) CPU ticks of the whole machine since boot. Busy is time charged to
    processes (user, nice, system): interrupt time, most of it the loopback traffic of
    the benchmark itself, is charged to no process, so it is left out."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return v[0] + v[1] + v[2], sum(v)


def _our_ticks(groups):
    """CPU ticks of this process and of the children it has waited for (every oha run), and
    of every process in the process groups of the servers it started."""
    with open("/proc/self/stat") as f:
        own = f.read().rsplit(")", 1)[1].split()
    total = sum(int(x) for x in own[11:15])  # utime, stime, cutime, cstime
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) in groups:  # pgrp
            # with cutime and cstime: a worker that exits moves its time to its parent
            total += sum(int(x) for x in fields[11:15])
    return total


class Noise:
    """How much CPU processes that are not part of the benchmark used: other builds and
    tests on a shared machine make every number slower and noisier, so each row records it."""

    def __init__(self, fleet):
        self.fleet = fleet

    def start(self):
        groups = {p.pid for _, p in self.fleet.procs}
        return time.monotonic(), _cpu_totals()[0], _our_ticks(groups), groups

    def stop(self, snap):
        t0, busy0, ours0, groups = snap
        busy = _cpu_totals()[0] - busy0
        ours = _our_ticks(groups) - ours0
        return max(0.0, (busy - ours) / CLK_TCK / max(1e-6, time.monotonic() - t0))  # in cores


def machine_busy(seconds=2.0):
    """Fraction of all CPU time used during `seconds` while we run nothing: other load."""
    b0, a0 = _cpu_totals()
    time.sleep(seconds)
    b1, a1 = _cpu_totals()
    return (b1 - b0) / max(1, a1 - a0)


# ---------------------------------------------------------------------------------------
# The servers under test.


def start_example(fleet, name, argv):
    """Starts one of the repository's examples on a free port (it prints
    `listening on http://ADDR`) and waits until it answers."""
    proc = fleet.start(name, argv)
    port = None

    def ready():
        nonlocal port
        m = re.search(r"listening on http://[\d.]+:(\d+)", tail(proc.log_path))
        if m:
            port = int(m.group(1))
        return port is not None and http_get_ok(port, "/api/version")

    wait_until(name, ready, proc, 30)
    return proc, port


def start_mock(fleet, args):
    # One mock thread: it answers from precomputed bytes, and every other core cycle is
    # left to the load generator and the hop being measured.
    return start_example(fleet, "mock", [args.mock, "--listen", "127.0.0.1:0", "--threads", "1"])


def start_bare(fleet, args, mock_port, name="bare"):
    """examples/bare_proxy.rs: diglot's HTTP stack (salvo + hyper's client) forwarding bytes."""
    upstream = f"http://127.0.0.1:{mock_port}"
    return start_example(fleet, name, [args.bare, "--listen", "127.0.0.1:0", "--upstream", upstream])


# The API token of the "features on" rows (F), and what its profile declares.
BENCH_TOKEN = "dg-bench0000000000000000000000000000000000000"


def features_on(work, shared=None):
    """Profile tables that turn on what a shared gateway runs with: a token (declared as
    its digest) with per-token limits, global and per-IP limits (never reached), usage
    records in an SQLite store, and Prometheus metrics (on by default). `shared`: a fleet's
    replica (G): the Redis URL, and the PostgreSQL URL for the store (None: SQLite still)."""
    digest = hashlib.sha256(BENCH_TOKEN.encode()).hexdigest()
    store = ["[store]", f'data_dir = "{os.path.join(work, "store")}"']
    if shared:
        postgres, redis = shared
        if postgres:
            store = ["[store]", f'url = "{postgres}"']
        store += ["[redis]", f'url = "{redis}"']
    return [
        "[limits]", "rpm = 100000000", "tpm = 100000000000", "ip_rpm = 100000000",
        *store,
        "[[tokens]]", 'name = "bench"', f'digest = "{digest}"', "rpm = 100000000", "tpm = 100000000000",
        "monthly_quota = 100000000000000",
    ]


def start_shared_state(fleet, args):
    """PostgreSQL and Redis for the fleet's row (G), from Debian's packages (installed by
    tests/services/setup.sh), as our own processes on loopback: their URLs, or None."""
    redis_bin = shutil.which("redis-server") or "/usr/bin/redis-server"
    initdb = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not os.path.exists(redis_bin) or not initdb:
        return None
    redis_port = free_port()
    redis = fleet.start("redis", [redis_bin, "--port", str(redis_port), "--bind", "127.0.0.1",
                                  "--save", "", "--appendonly", "no"])
    wait_until("redis", lambda: socket.create_connection(("127.0.0.1", redis_port), 1).close() or True, redis, 30)
    bin_dir = os.path.dirname(initdb[-1])
    # Under /tmp: the unprivileged user may not reach into root's home.
    home = tempfile.mkdtemp(prefix="diglot-bench-pg-")
    atexit.register(shutil.rmtree, home, True)
    user = None
    if os.geteuid() == 0:  # initdb and postgres refuse root
        import pwd
        nobody = pwd.getpwnam("nobody")
        user = (nobody.pw_uid, nobody.pw_gid)
        os.chown(home, *user)
    data = os.path.join(home, "data")
    subprocess.run([os.path.join(bin_dir, "initdb"), "-U", "diglot", "--auth=trust", "-D", data],
                   check=True, stdout=subprocess.DEVNULL, user=user and user[0], group=user and user[1])
    pg_port = free_port()
    postgres = fleet.start("postgres", [os.path.join(bin_dir, "postgres"), "-D", data, "-k", home,
                                        "-c", "listen_addresses=127.0.0.1", "-p", str(pg_port),
                                        "-c", "fsync=off", "-c", "synchronous_commit=off"], user=user)
    ready = [os.path.join(bin_dir, "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(pg_port)]
    wait_until("postgres", lambda: subprocess.run(ready).returncode == 0, postgres, 60)
    return f"postgres://diglot@127.0.0.1:{pg_port}/postgres", f"redis://127.0.0.1:{redis_port}"


def start_diglot(fleet, args, name, kind, mock_port, headers=None, features=False, shared=None):
    port = free_port()
    profile = os.path.join(args.work, f"{name}.toml")
    lines = [
        f'listen = "127.0.0.1:{port}"',
        "[routing]",
        "check_interval_secs = 0.0",
        "[upstream]",
        f'kind = "{kind}"',
        f'url = "http://127.0.0.1:{mock_port}"',
        "[upstream.headers]",
    ]
    lines += [f'"{k}" = "{v}"' for k, v in (headers or {}).items()]
    # Features off: no store, no token, no limits, no metrics (each row says which it
    # measures).
    lines += features_on(args.work, shared) if features else ["[store]", 'data_dir = ""', "[metrics]", "enabled = false"]
    with open(profile, "w") as f:
        f.write("\n".join(lines) + "\n")
    proc = fleet.start(name, [args.diglot, "--profile", profile], env={"RUST_LOG": "warn"})
    wait_until(name, lambda: http_get_ok(port, "/api/version"), proc, 30)
    return proc, port


NGINX_CONF = """\
# Written by diglot's bench.py: a plain reverse proxy, the floor for any HTTP hop.
daemon off;
worker_processes {workers};
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 16384; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    upstream mock {{
        server 127.0.0.1:{mock_port};
        keepalive 256;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        keepalive_requests 1000000;
        location / {{
            proxy_pass http://mock;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            # Stream answers chunk by chunk, as an LLM proxy must.
            proxy_buffering off;
        }}
    }}
}}
"""


def start_nginx(fleet, args, mock_port):
    port = free_port()
    prefix = os.path.join(args.work, "nginx")
    for d in ("tmp/body", "tmp/proxy", "tmp/fastcgi", "tmp/uwsgi", "tmp/scgi"):
        os.makedirs(os.path.join(prefix, d), exist_ok=True)
    conf = os.path.join(prefix, "nginx.conf")
    with open(conf, "w") as f:
        # As many workers as diglot has runtime threads (one per core).
        f.write(NGINX_CONF.format(prefix=prefix, mock_port=mock_port, port=port, workers=os.cpu_count()))
    proc = fleet.start(
        "nginx", [args.nginx, "-p", prefix, "-c", conf, "-e", os.path.join(prefix, "error.log")]
    )
    wait_until("nginx", lambda: http_get_ok(port, "/api/version"), proc, 30)
    return proc, port


LITELLM_CONF = """\
# Written by diglot's bench.py: LiteLLM's proxy in front of the same mock, Ollama provider.
model_list:
  - model_name: {model}
    litellm_params:
      model: ollama_chat/{model}
      api_base: http://127.0.0.1:{mock_port}
litellm_settings:
  drop_params: true
  telemetry: false
"""


def start_litellm(fleet, args, mock_port):
    port = free_port()
    conf = os.path.join(args.work, "litellm.yaml")
    with open(conf, "w") as f:
        f.write(LITELLM_CONF.format(model=MODEL, mock_port=mock_port))
    # One worker per core, as TensorZero's comparison ran it (--num_workers = vCPUs), under
    # gunicorn: LiteLLM's uvicorn multi-worker mode kept losing its workers at start-up here.
    argv = [args.litellm, "--config", conf, "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--num_workers", str(os.cpu_count()), "--run_gunicorn", "--telemetry", "False"]
    env = {
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # else it downloads the cost map at import
        "LITELLM_LOG": "ERROR",
    }
    proc = fleet.start("litellm", argv, env=env)
    return proc, port


# ---------------------------------------------------------------------------------------
# oha.


class Oha:
    def __init__(self, args, cfg, noise):
        self.path = args.oha
        self.cfg = cfg
        self.noise = noise
        self.runs = []  # every measured run, raw output included, for the JSON file

    def _run(self, url, body, headers, rate, conns, duration):
        argv = [self.path, "--no-tui", "--output-format", "json", "-m", "POST"]
        argv += ["-T", "application/json", "-d", body]
        for k, v in (headers or {}).items():
            argv += ["-H", f"{k}: {v}"]
        # -w: requests in flight at the deadline finish and count, rather than being
        # reported as "aborted due to deadline" errors.
        argv += ["-c", str(conns), "-z", f"{duration}s", "-w", "-t", f"{self.cfg['timeout']}s"]
        if rate:
            argv += ["-q", str(rate), "--latency-correction"]
        argv.append(url)
        try:
            out = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                timeout=duration + self.cfg["timeout"] + 60,
                env={**os.environ, "NO_COLOR": "1"},
                preexec_fn=_die_with_parent,
            )
        except subprocess.TimeoutExpired:
            return argv, None, "oha did not finish in time"
        if out.returncode != 0:
            return argv, None, out.stderr.strip()[-500:]
        return argv, json.loads(out.stdout), None

    def measure(self, scenario, target, url, body, headers=None, rate=None, conns=None, pids=()):
        """A warm-up run with the same load, then the measured run; returns its summary."""
        conns = conns or (self.cfg["open_conns"] if rate else self.cfg["max_conns"])
        if self.cfg["warmup"]:
            self._run(url, body, headers, rate, conns, self.cfg["warmup"])
        cpu0, noise = cpu_seconds(pids), self.noise.start()
        argv, raw, err = self._run(url, body, headers, rate, conns, self.cfg["duration"])
        cpu, other = cpu_seconds(pids) - cpu0, self.noise.stop(noise)
        if target == "LiteLLM":
            wait_quiet(pids)  # it may still be working off a backlog the next row would pay for
        row = summarize(raw, err)
        row.update(scenario=scenario, target=target, rate=rate, conns=conns, cpu_s=cpu, other_cores=other)
        self.runs.append({**row, "argv": argv, "raw": raw})
        tag = f"{rate} req/s" if rate else f"max @c{conns}"
        if err:
            log(f"{scenario} | {target} | {tag}: FAILED: {err}")
        else:
            log(
                f"{scenario} | {target} | {tag}: {row['achieved']:.0f} req/s, ok {row['success']:.2%}, "
                f"p50 {row['p50']:.3f} p99 {row['p99']:.3f} ms; other processes: {other:.2f} cores"
            )
        return row


def summarize(raw, err):
    if raw is None:
        return dict(ok=0, total=0, success=0.0, achieved=0.0, ok_rps=0.0, p50=None, p90=None, p99=None, error=err)
    status = raw.get("statusCodeDistribution", {})
    errors = raw.get("errorDistribution", {})
    ok = sum(v for k, v in status.items() if k.startswith("2"))
    total = sum(status.values()) + sum(errors.values())
    secs = raw["summary"]["total"] or 1e-9
    pct = raw.get("latencyPercentiles", {})

    def ms(key):
        v = pct.get(key)
        return None if v is None else v * 1000

    err = None
    if ok < total:
        bad = {k: v for k, v in status.items() if not k.startswith("2")}
        err = ", ".join([f"HTTP {k}: {v}" for k, v in bad.items()] + [f"{k}: {v}" for k, v in errors.items()])
    return dict(
        ok=ok,
        total=total,
        success=ok / total if total else 0.0,
        achieved=total / secs,
        ok_rps=ok / secs,
        p50=ms("p50"),
        p90=ms("p90"),
        p99=ms("p99"),
        error=err,
    )


# ---------------------------------------------------------------------------------------
# Stdlib clients: time to first token, and many slow streams held open.


def first_token_ms(conn, path, body, headers):
    t0 = time.perf_counter()
    conn.request("POST", path, body, {"content-type": "application/json", **headers})
    resp = conn.getresponse()
    seen = b""
    while CHUNK_TEXT.encode() not in seen:
        data = resp.read1(65536)
        if not data:
            raise RuntimeError(f"stream ended before the first token (HTTP {resp.status})")
        seen += data
    t = time.perf_counter() - t0
    seen += resp.read()  # drain, so the keep-alive connection is reused for the next request
    if resp.status != 200:
        raise RuntimeError(f"HTTP {resp.status}")
    why = stream_end_error(path, seen)
    if why:
        raise RuntimeError(f"{path}: the stream did not end cleanly: {why}")
    return t * 1000


def ttft_pair(direct, via, path, body, headers, n):
    """Sequential requests, alternating direct and via diglot so drift hits both alike."""
    conns = {k: http.client.HTTPConnection("127.0.0.1", p, timeout=10) for k, p in (("direct", direct), ("diglot", via))}
    times = {"direct": [], "diglot": []}
    try:
        for i in range(n + n // 10):
            for k, c in conns.items():
                t = first_token_ms(c, path, body, headers)
                if i >= n // 10:  # the first tenth warms up connections and caches
                    times[k].append(t)
    finally:
        for c in conns.values():
            c.close()
    return times


def ttft_added(direct, via, path, body, headers, n):
    """The median time to first token `via` a hop minus direct's, from `ttft_pair`."""
    times = ttft_pair(direct, via, path, body, headers, n)
    return statistics.median(times["diglot"]) - statistics.median(times["direct"])


async def _open_stream(port, request, sem, timeout):
    async with sem:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
        writer.write(request)
        await writer.drain()
        seen = b""
        while CHUNK_TEXT.encode() not in seen:
            data = await asyncio.wait_for(reader.read(4096), timeout)
            if not data:
                writer.close()
                raise ConnectionError(f"closed before the first token: {seen[:200]!r}")
            seen += data
        if not seen.startswith(b"HTTP/1.1 200"):
            writer.close()
            raise ConnectionError(seen.split(b"\r\n", 1)[0].decode(errors="replace"))
        return writer


async def hold_streams(pid, port, path, body, steps, settle, headers=None):
    """Opens streams up to each count in `steps` (incrementally) and reads the hop's RSS with
    that many open; returns [(count, opened, rss)]."""
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    request = (
        f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\ncontent-type: application/json\r\n{extra}"
        f"content-length: {len(body)}\r\n\r\n{body}"
    ).encode()
    sem = asyncio.Semaphore(200)  # below the listen backlog, so no SYN is dropped
    writers, failures, out = [], [], []
    try:
        for count in steps:
            need = count - len(writers)
            results = await asyncio.gather(
                *(_open_stream(port, request, sem, 60) for _ in range(need)), return_exceptions=True
            )
            for r in results:
                (failures if isinstance(r, BaseException) else writers).append(r)
            await asyncio.sleep(settle)
            out.append((count, len(writers), rss_bytes(pid)))
            log(f"memory: {len(writers)} streams open ({len(failures)} failed): RSS {out[-1][2] / 2**20:.1f} MiB")
    finally:
        for w in writers:
            w.close()
        await asyncio.sleep(0.5)
    if failures:
        log(f"memory: first stream failure: {failures[0]!r}")
    return out, len(failures)


# ---------------------------------------------------------------------------------------
# Formatting.


def f_ms(v):
    return "—" if v is None else f"{v:.3f}"


def f_added(v):
    return "—" if v is None else f"{v:+.3f}"


def f_ratio(v):
    return "—" if v is None else f"{v:.2f}×"


def f_int(v):
    return "—" if v is None else f"{v:,.0f}"


def ratio(a, b):
    return None if a is None or b is None or b <= 0 else a / b


def sub(a, b):
    return None if a is None or b is None else a - b


def mark(row, label):
    return label + (" ⚠" if (row.get("other_cores") or 0) > NOISY_CORES else "")


def table(head, rows):
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------
# Scenarios.


def chat_body(stream):
    # A one-message chat is the same JSON in both APIs; only the stream default differs
    # (Ollama streams unless told not to), so `stream` is always explicit.
    return json.dumps({"model": MODEL, "messages": PROMPT, "stream": stream})


body_openai = body_ollama = chat_body


def overhead(oha, name, path, body, targets, rates, extra_rates=None, reuse=None):
    """Open-loop rows at each rate, then closed-loop max throughput, for every target.

    targets: [(label, port, pids)], pids may be a function that waits for the server and
    returns its pids, or None when it never came up (its rows are skipped); reuse: rows of
    another scenario whose direct/nginx requests were identical (same path, same body, same
    mock), shown again for reference. Rates go outermost so the rows compared at one rate
    were measured minutes apart at most.
    """
    rows = []

    def run(label, port, pids, rate):
        pids = pids() if callable(pids) else pids
        if pids is not None:
            rows.append(oha.measure(name, label, f"http://127.0.0.1:{port}{path}", body, rate=rate, pids=pids))

    for rate in rates:
        for label, port, pids in targets:
            if label != "LiteLLM" or rate in (extra_rates or []):
                run(label, port, pids, rate)
    for rate in extra_rates or []:
        for label, port, pids in targets:
            if label == "LiteLLM" and rate not in rates:
                run(label, port, pids, rate)
    for label, port, pids in targets:
        run(label, port, pids, None)
    for r in reuse or []:
        rows.append({**r, "scenario": name, "reused": True})
    return rows


ORDER = ["direct", "diglot", "bare stack", "nginx", "LiteLLM"]


def find(rows, target, rate):
    for r in rows:
        if r["target"] == target and r["rate"] == rate:
            return r
    return None


def held(row):
    """Whether an open-loop row kept up with its rate: answered at 97 % of what was offered."""
    return row["achieved"] >= 0.97 * row["rate"]


def report_overhead(title, rows, notes):
    """The Markdown for one overhead scenario, and notes on the mock being the limit."""
    out = [f"### {title}", ""]
    rates = sorted({r["rate"] for r in rows if r["rate"]})
    head = ["req/s offered", "path", "achieved", "success", "p50 ms", "p90 ms", "p99 ms",
            "added p50", "added p99", "added p50 ÷ nginx's"]
    body = []
    for rate in rates:
        direct, nginx = find(rows, "direct", rate), find(rows, "nginx", rate)
        if direct and not held(direct):
            notes.append(f"{title}: direct reached only {direct['achieved']:.0f} of {rate} req/s offered: "
                         "the mock and load generator are the limit at that rate.")
        for r in sorted((r for r in rows if r["rate"] == rate), key=lambda r: ORDER.index(r["target"])):
            if r["target"] != "direct" and not r.get("reused") and not held(r):
                notes.append(f"{title.split('.')[0]}: {r['target']} could not hold {rate:,} req/s (it answered "
                             f"{r['achieved']:,.0f} req/s, success {r['success']:.2%}); its latencies include the "
                             "time requests waited to be sent.")
            added50 = sub(r["p50"], direct and direct["p50"]) if r["target"] != "direct" else None
            added99 = sub(r["p99"], direct and direct["p99"]) if r["target"] != "direct" else None
            nginx50 = sub(nginx and nginx["p50"], direct and direct["p50"])
            vs = ratio(added50, nginx50) if r["target"] not in ("direct", "nginx") else None
            label = mark(r, r["target"] + (" (same run, from above)" if r.get("reused") else ""))
            body.append([f_int(rate), label, f_int(r["achieved"]), f"{r['success']:.2%}", f_ms(r["p50"]),
                         f_ms(r["p90"]), f_ms(r["p99"]), f_added(added50), f_added(added99), f_ratio(vs)])
    out += [table(head, body), ""]
    maxrows = [r for r in rows if r["rate"] is None]
    if maxrows:
        direct, dig = find(rows, "direct", None), find(rows, "diglot", None)
        head = ["max throughput", "req/s (2xx)", "success", "p50 ms", "p99 ms", "÷ direct", "diglot ÷ this",
                "proxy CPU µs/req"]
        body = []
        for r in sorted(maxrows, key=lambda r: ORDER.index(r["target"])):
            label = mark(r, r["target"] + (" (same run, from above)" if r.get("reused") else ""))
            cpu = f"{r['cpu_s'] / r['ok'] * 1e6:.0f}" if r["target"] != "direct" and r["ok"] else "—"
            body.append([f"{label} @c{r['conns']}", f_int(r["ok_rps"]), f"{r['success']:.2%}", f_ms(r["p50"]),
                         f_ms(r["p99"]), f_ratio(ratio(r["ok_rps"], direct and direct["ok_rps"])),
                         f_ratio(ratio(dig and dig["ok_rps"], r["ok_rps"])) if r is not dig else "—", cpu])
        out += [table(head, body), ""]
        if direct and dig and dig["ok_rps"] and direct["ok_rps"] < 1.5 * dig["ok_rps"]:
            notes.append(f"{title}: direct max throughput is only {direct['ok_rps'] / dig['ok_rps']:.2f}× diglot's: "
                         "the mock and oha use most of the shared cores, so the max-throughput rows are bound by "
                         "the whole machine, not by diglot alone.")
    return out


def report_fleet(rows_f, rows_redis, rows_both):
    """G against F, rate by rate: what sharing the limits through Redis (G1), and the store
    through PostgreSQL too (G2), adds to each request."""
    out = ["### G. F as one replica of a fleet: G1 limits and quota in Redis; G2 the store in PostgreSQL too", ""]
    head = ["req/s offered", "F p50 ms", "G1 added p50", "G2 added p50", "F p99 ms", "G1 added p99",
            "G2 added p99", "G1 / G2 success", "F / G1 / G2 CPU µs/req"]
    body = []
    cpu = lambda r: f"{r['cpu_s'] / r['ok'] * 1e6:.0f}" if r["ok"] else "—"
    for g1 in rows_redis:
        f = next((r for r in rows_f if r["rate"] == g1["rate"]), None)
        g2 = next((r for r in rows_both if r["rate"] == g1["rate"]), None)
        if not f or not g2:
            continue
        offered = f_int(g1["rate"]) if g1["rate"] else \
            f"max @c{g1['conns']} ({f_int(f['ok_rps'])} → {f_int(g1['ok_rps'])} / {f_int(g2['ok_rps'])} req/s)"
        body.append([offered, f_ms(f["p50"]), f_added(sub(g1["p50"], f["p50"])), f_added(sub(g2["p50"], f["p50"])),
                     f_ms(f["p99"]), f_added(sub(g1["p99"], f["p99"])), f_added(sub(g2["p99"], f["p99"])),
                     f"{g1['success']:.2%} / {g2['success']:.2%}", f"{cpu(f)} / {cpu(g1)} / {cpu(g2)}"])
    out += [table(head, body), "",
            "Each admitted request costs two Redis scripts (the admission, one round trip before the call; "
            "the settlement after the answer, which does not delay it); in G2 its usage record goes to "
            "PostgreSQL in a batch instead of SQLite. The CPU column is diglot's own: Redis and PostgreSQL "
            "run beside it on the same cores, with the load generator and the mock.", ""]
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="seconds per scenario; exit 1 if diglot fails")
    ap.add_argument("--repo", required=True)
    ap.add_argument("--diglot", required=True)
    ap.add_argument("--mock", required=True)
    ap.add_argument("--oha", required=True)
    ap.add_argument("--nginx")
    ap.add_argument("--bare", help="examples/bare_proxy: the bare-stack rows are skipped without it")
    ap.add_argument("--litellm", help="the litellm CLI of its venv; its rows are skipped without it")
    ap.add_argument("--work", required=True, help="scratch directory for configs and logs")
    ap.add_argument("--duration", type=float, help="seconds per measured run (overrides the mode)")
    ap.add_argument("--wait-idle", type=float, default=0, metavar="SECONDS",
                    help="first wait up to this long for other processes to leave the CPU idle")
    ap.add_argument("--out", help="directory for the JSON and Markdown (default: REPO/target/bench)")
    args = ap.parse_args()
    mode = "smoke" if args.smoke else "full"
    cfg = dict(MODES[mode])
    if args.duration:
        cfg["duration"] = args.duration
    started = datetime.datetime.now(datetime.timezone.utc)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    args.work = os.path.join(args.work, stamp)
    os.makedirs(args.work, exist_ok=True)
    out_dir = args.out or os.path.join(args.repo, "target", "bench")
    os.makedirs(out_dir, exist_ok=True)
    t_start = time.monotonic()

    meta = machine_meta(args, mode)
    if args.wait_idle:
        deadline = time.monotonic() + args.wait_idle
        while machine_busy(5.0) > 0.05 and time.monotonic() < deadline:
            log("waiting for the machine to be idle (other processes use the CPU)")
    meta["busy_before"] = machine_busy(1.0 if args.smoke else 2.0)
    log(f"{mode} run; other load on the machine before start: {meta['busy_before']:.0%} of CPU")

    fleet = Fleet(args.work)
    notes, failures = [], []
    mem_failed = False
    checked = []  # diglot's oha rows: each must answer every request with a 2xx
    md = []
    result = dict(meta=meta, config=cfg, runs=None, streaming=[], ttft=[], memory={}, targets=[])
    oha = Oha(args, cfg, Noise(fleet))
    try:
        mock, mock_port = start_mock(fleet, args)
        litellm = None
        if args.litellm:
            litellm, litellm_port = start_litellm(fleet, args, mock_port)
        d_ollama, d_ollama_port = start_diglot(fleet, args, "diglot-ollama", "ollama", mock_port)
        d_openai, d_openai_port = start_diglot(fleet, args, "diglot-openai", "openai", mock_port)
        nginx = nginx_port = None
        if args.nginx:
            nginx, nginx_port = start_nginx(fleet, args, mock_port)
        litellm_state = {}

        def litellm_pids():
            """Waits for LiteLLM once (it takes seconds to start); None if it never answers."""
            if "pids" not in litellm_state:
                try:
                    wait_until("litellm", lambda: http_get_ok(litellm_port, "/health/liveliness"), litellm, 180)
                    status, answer = post(litellm_port, "/v1/chat/completions", body_openai(False), timeout=30)
                    if status != 200:
                        raise RuntimeError(f"LiteLLM answered HTTP {status}: {answer[:300]!r}")
                    litellm_state["pids"] = [litellm.pid] + children(litellm.pid)
                except RuntimeError as e:
                    notes.append(f"LiteLLM did not start or answer, its rows are missing: {str(e)[:500]}")
                    log(notes[-1])
                    fleet.stop(litellm)
                    litellm_state["pids"] = None
            return litellm_state["pids"]

        if litellm and mode == "full":
            litellm_pids()  # its start-up must not share the cores with a measurement
        # A request of each kind before measuring: a broken path fails here, loudly.
        for port, path, body in ((d_ollama_port, "/v1/chat/completions", body_openai(False)),
                                 (d_openai_port, "/api/chat", body_ollama(False)),
                                 (d_openai_port, "/v1/chat/completions", body_openai(False)),
                                 (d_ollama_port, "/api/chat", body_ollama(False))):
            status, answer = post(port, path, body)
            if status != 200 or CHUNK_TEXT.encode() not in answer:
                raise RuntimeError(f"diglot {path} answered HTTP {status}: {answer[:300]!r}")
            # The same request streamed: a 200 whose stream ends in an error fails too.
            why = check_stream(port, path, body.replace('"stream": false', '"stream": true'))
            if why:
                raise RuntimeError(f"diglot {path}, streamed: {why}")

        nginx_pids = [nginx.pid] + children(nginx.pid) if nginx else []
        nginx_t = [("nginx", nginx_port, nginx_pids)] if nginx else []
        bare_t = []
        if args.bare:
            bare, bare_port = start_bare(fleet, args, mock_port)
            bare_t = [("bare stack", bare_port, [bare.pid])]

        # --- A. OpenAI client -> Ollama upstream
        title_a = "A. Non-streaming, OpenAI client → Ollama upstream (POST /v1/chat/completions)"
        targets = [("direct", mock_port, []), ("diglot", d_ollama_port, [d_ollama.pid])] + bare_t + nginx_t
        if litellm:
            # The smoke run lets LiteLLM start while the other rows are measured.
            targets.append(("LiteLLM", litellm_port, litellm_pids))
        rows_a = overhead(oha, "A", "/v1/chat/completions", body_openai(False), targets, cfg["rates_a"],
                          extra_rates=cfg["litellm_rates"] if litellm else None)
        if litellm:
            fleet.stop(litellm)  # it is done; its idle workers should not share the cores
            if not litellm_state.get("pids"):
                litellm = None
        md += report_overhead(title_a, rows_a, notes)
        md += ["direct = the mock's own `/v1/chat/completions`; diglot translates to the mock's `/api/chat`; "
               "nginx forwards the OpenAI body to the mock's `/v1`; LiteLLM uses its `ollama_chat/` provider "
               "(the mock's `/api/chat`); bare stack = `examples/bare_proxy.rs`, diglot's HTTP stack (salvo in "
               "front, hyper's client behind, same listener and runtime) forwarding the OpenAI body as bytes to the mock's "
               "`/v1`, with none of diglot's work: what any gateway on this stack pays." +
               ("" if litellm else " LiteLLM: not measured (see notes)."), ""]

        # --- B. Ollama client -> OpenAI-compatible upstream
        title_b = "B. Non-streaming, Ollama client → OpenAI-compatible upstream (POST /api/chat)"
        targets = [("direct", mock_port, []), ("diglot", d_openai_port, [d_openai.pid])] + nginx_t
        rows_b = overhead(oha, "B", "/api/chat", body_ollama(False), targets, cfg["rates"])
        md += report_overhead(title_b, rows_b, notes)
        md += ["direct = the mock's own `/api/chat`; diglot translates to the mock's `/v1/chat/completions`; "
               "nginx forwards the Ollama body to the mock's `/api/chat`. LiteLLM has no Ollama-API frontend.", ""]

        # --- C. Same-protocol pass-through: only diglot is new; direct and nginx send the
        # very same requests as in A (OpenAI) and B (Ollama), so their rows are reused.
        reuse_oa = [r for r in rows_a if r["target"] in ("direct", "nginx") and (r["rate"] in cfg["rates"] or r["rate"] is None)]
        reuse_ol = [r for r in rows_b if r["target"] in ("direct", "nginx")]
        rows_c1 = overhead(oha, "C1", "/v1/chat/completions", body_openai(False),
                           [("diglot", d_openai_port, [d_openai.pid])], cfg["rates"], reuse=reuse_oa)
        md += report_overhead("C1. Pass-through, OpenAI client → OpenAI-compatible upstream", rows_c1, notes)
        rows_c2 = overhead(oha, "C2", "/api/chat", body_ollama(False),
                           [("diglot", d_ollama_port, [d_ollama.pid])], cfg["rates"], reuse=reuse_ol)
        md += report_overhead("C2. Pass-through, Ollama client → Ollama upstream", rows_c2, notes)
        # diglot after all that load, idle again: what a used gateway holds.
        time.sleep(1)
        rss_after_load = max(rss_bytes(d_ollama.pid), rss_bytes(d_openai.pid))

        # --- D. Streaming
        n = cfg["stream_chunks"]
        burst = {"x-mock-chunks": str(n)}
        # Time to first token is judged on a paced stream, as a model sends it: the first
        # chunk at once and the rest 2 ms apart, so the first chunk travels alone. With a
        # burst of n chunks in one upstream read, the first token also waits for whatever
        # the hop does with the rest of the read; that is shown too.
        paced = {"x-mock-chunks": "4", "x-mock-delay-ms": "2"}
        s_ollama, s_ollama_port = start_diglot(fleet, args, "diglot-stream-ollama", "ollama", mock_port, burst)
        s_openai, s_openai_port = start_diglot(fleet, args, "diglot-stream-openai", "openai", mock_port, burst)
        p_ollama, p_ollama_port = start_diglot(fleet, args, "diglot-paced-ollama", "ollama", mock_port, paced)
        p_openai, p_openai_port = start_diglot(fleet, args, "diglot-paced-openai", "openai", mock_port, paced)
        md += [f"### D. Streaming: {n} chunks per answer, no delay (closed loop, {cfg['stream_conns']} connections)", ""]
        head = ["direction", "path", "req/s", "chunks/s", "÷ direct", "success", "CPU s per 1M chunks (proxy)"]
        body_rows, ttft_rows = [], []
        for label, path, body, s_proc, s_port, p_port in (
            ("OpenAI client → Ollama upstream", "/v1/chat/completions", body_openai(True), s_ollama, s_ollama_port,
             p_ollama_port),
            ("Ollama client → OpenAI upstream", "/api/chat", body_ollama(True), s_openai, s_openai_port,
             p_openai_port),
        ):
            srows = []
            for tl, port, pids in [("direct", mock_port, []), ("diglot", s_port, [s_proc.pid])] + (
                    [("nginx", nginx_port, nginx_pids)] if nginx else []):
                r = oha.measure("D", tl, f"http://127.0.0.1:{port}{path}", body, headers=burst,
                                conns=cfg["stream_conns"], pids=pids)
                r["chunks_per_s"] = r["ok_rps"] * n
                r["cpu_per_m_chunks"] = r["cpu_s"] / (r["ok"] * n) * 1e6 if pids and r["ok"] else None
                r["direction"] = label
                srows.append(r)
                if tl == "diglot":
                    # oha sees only the status: check that a stream through this path
                    # still ends cleanly after the load.
                    why = check_stream(port, path, body, burst)
                    if why:
                        failures.append(f"D diglot {label}: a streamed answer failed: {why}")
            direct = srows[0]
            for r in srows:
                body_rows.append([label, mark(r, r["target"]), f_int(r["ok_rps"]), f_int(r["chunks_per_s"]),
                                  f_ratio(ratio(r["chunks_per_s"], direct["chunks_per_s"])), f"{r['success']:.2%}",
                                  "—" if r["cpu_per_m_chunks"] is None else f"{r['cpu_per_m_chunks']:.2f}"])
            dig = srows[1]
            if direct["chunks_per_s"] < 1.5 * dig["chunks_per_s"]:
                notes.append(f"D ({label}): direct streams only {ratio(direct['chunks_per_s'], dig['chunks_per_s']):.2f}× "
                             "diglot's chunks/s: the mock and oha share the cores, so this is bound by the machine.")
            result["streaming"] += srows
            requests = cfg["ttft_requests"]
            for kind, port, hdr in (("paced: 4 chunks, 2 ms apart", p_port, paced),
                                    (f"burst: {n} chunks at once", s_port, burst)):
                tt = ttft_pair(mock_port, port, path, body, hdr, requests)
                med = {k: statistics.median(v) for k, v in tt.items()}
                p90 = {k: statistics.quantiles(v, n=10)[-1] for k, v in tt.items()}
                added = med["diglot"] - med["direct"]
                # The same hop through nginx (the client's path to the mock's own API, as
                # "direct"): what any hop adds on this machine, for comparison.
                # And through the bare stack: what diglot's HTTP stack adds without its work.
                nginx_added = ttft_added(mock_port, nginx_port, path, body, hdr, requests) if nginx else None
                bare_added = ttft_added(mock_port, bare_port, path, body, hdr, requests) if args.bare else None
                result["ttft"].append(dict(direction=label, upstream=kind, paced=kind.startswith("paced"),
                                           requests=requests, median_ms=med, p90_ms=p90,
                                           added_ms=added, nginx_added_ms=nginx_added,
                                           bare_added_ms=bare_added, samples_ms=tt))
                log(f"D | {label} | TTFT ({kind}) median direct {med['direct']:.3f} ms, diglot {med['diglot']:.3f} ms")
                ttft_rows.append([label, kind, f_ms(med["direct"]), f_ms(med["diglot"]), f_added(added),
                                  f_added(bare_added), f_added(nginx_added), f_ms(p90["direct"]), f_ms(p90["diglot"])])
        md += [table(head, body_rows), ""]
        md += [f"Time to first token: {cfg['ttft_requests']} sequential streamed requests per row, alternating direct "
               "and diglot on keep-alive connections; from sending the request to the first content byte. "
               "bare stack and nginx added: the same pairs run through them instead.", "",
               table(["direction", "upstream sends", "direct median ms", "diglot median ms", "added ms",
                      "bare stack added ms", "nginx added ms", "direct p90 ms", "diglot p90 ms"], ttft_rows), ""]
        for proc in (s_ollama, s_openai, p_ollama, p_openai):
            fleet.stop(proc)

        # --- E. Memory with many slow streams open
        # What diglot serves under this open-file limit (src/http/listener.rs, `capacity`):
        # two descriptors per stream, four ninths of what is left after 256 for itself,
        # the rest kept to answer 503 past it.
        limit = (os.sysconf("SC_OPEN_MAX") - 256) // 9 * 4
        steps = []
        for s in cfg["open_streams"]:
            if s > limit:
                capped = limit // 100 * 100
                notes.append(f"E: diglot serves {limit:,} connections under the open-file hard limit here, "
                             f"{os.sysconf('SC_OPEN_MAX'):,} (two descriptors each, and a margin to answer 503 "
                             f"past it; raising it needs CAP_SYS_RESOURCE): measured {capped:,} streams, not {s:,}.")
                s = capped
            steps.append(s)
        slow = {"x-mock-chunks": "1000000", "x-mock-delay-ms": str(cfg["slow_delay_ms"])}
        m_proc, m_port = start_diglot(fleet, args, "diglot-memory", "ollama", mock_port, slow)
        time.sleep(0.5)
        idle = rss_bytes(m_proc.pid)
        held, mem_failures = asyncio.run(hold_streams(m_proc.pid, m_port, "/v1/chat/completions",
                                                      body_openai(True), steps, settle=1.0))
        mem = dict(idle_fresh=idle, idle_after_load=rss_after_load, steps=[])
        md += ["### E. Memory (diglot RSS, OpenAI client → Ollama upstream, slow streams: one chunk every "
               f"{cfg['slow_delay_ms']} ms)", ""]
        body_rows = [["idle, fresh start", "—", f"{idle / 2**20:.1f} MiB", "—"],
                     ["idle, after the load above (the A–C instances)", "—", f"{rss_after_load / 2**20:.1f} MiB", "—"]]
        for count, opened, rss in held:
            per = (rss - idle) / max(1, opened)
            mem["steps"].append(dict(streams=count, opened=opened, rss=rss, bytes_per_stream=per))
            body_rows.append([f"{count:,} streams open", f"{opened:,}", f"{rss / 2**20:.1f} MiB", f"{per / 1024:.1f} KiB"])
        mem["failures"] = mem_failures
        if args.bare:
            # The same streams through a fresh bare stack: what salvo and hyper hold per
            # connection without diglot's work (not a target; the floor of its stack).
            b_proc, b_port = start_bare(fleet, args, mock_port, "bare-memory")
            time.sleep(0.5)
            b_idle = rss_bytes(b_proc.pid)
            b_held, b_failures = asyncio.run(hold_streams(b_proc.pid, b_port, "/v1/chat/completions",
                                                          body_openai(True), steps[:1], settle=1.0, headers=slow))
            fleet.stop(b_proc)
            for count, opened, rss in b_held:
                per = (rss - b_idle) / max(1, opened)
                mem["bare_stack"] = dict(streams=count, opened=opened, idle=b_idle, rss=rss, bytes_per_stream=per)
                body_rows.append([f"bare stack (no diglot work), {count:,} streams open", f"{opened:,}",
                                  f"{rss / 2**20:.1f} MiB", f"{per / 1024:.1f} KiB"])
            if b_failures:
                notes.append(f"E: {b_failures} slow streams through the bare stack failed to open.")
        result["memory"] = mem
        md += [table(["state", "streams open", "RSS", "per open stream"], body_rows), ""]
        if mem_failures:
            mem_failed = True
            failures.append(f"E: {mem_failures} slow streams through diglot failed to open")

        # --- F. Gateway features
        title_f = "F. Gateway features on: OpenAI client → Ollama upstream with a token, rate limits, quota, usage records, metrics"
        f_proc, f_port = start_diglot(fleet, args, "diglot-features", "ollama", mock_port, features=True)
        status, answer = post(f_port, "/v1/chat/completions", body_openai(False),
                              headers={"Authorization": f"Bearer {BENCH_TOKEN}"})
        if status != 200:
            raise RuntimeError(f"diglot with features answered HTTP {status}: {answer[:300]!r}")
        auth = {"Authorization": f"Bearer {BENCH_TOKEN}"}
        rows_f = [oha.measure("F", "diglot", f"http://127.0.0.1:{f_port}/v1/chat/completions",
                              body_openai(False), headers=auth, rate=rate, pids=[f_proc.pid])
                  for rate in cfg["rates"] + [None]]
        reuse_f = [r for r in rows_a if r["target"] in ("direct", "nginx") and (r["rate"] in cfg["rates"] or r["rate"] is None)]
        md += report_overhead(title_f, rows_f + [{**r, "scenario": "F", "reused": True} for r in reuse_f], notes)
        md += ["diglot here checks the token (SHA-256 digest, constant-time compare), applies global, per-IP "
               "and per-token request and token limits and a monthly quota (reserve, then settle), and writes "
               "a usage record per request to SQLite in batches, and records its Prometheus metrics. "
               "Compare with A's diglot rows (features off).", ""]
        fleet.stop(f_proc)

        # --- G. F as one replica of a fleet: limits, quota and token concurrency in Redis
        # (one script per check), the store in PostgreSQL.
        shared = start_shared_state(fleet, args)
        if shared is None:
            notes.append("G: skipped: PostgreSQL or redis-server is not installed (tests/services/setup.sh installs both).")
        else:
            postgres, redis = shared
            # G1: only the limits move to Redis, so its row is what a shared check costs;
            # G2: the store moves to PostgreSQL too, as in a fleet.
            rows_g = {}
            for row, name, urls in (("G1", "diglot-fleet-redis", (None, redis)), ("G2", "diglot-fleet", shared)):
                g_proc, g_port = start_diglot(fleet, args, name, "ollama", mock_port, features=True, shared=urls)
                status, answer = post(g_port, "/v1/chat/completions", body_openai(False), headers=auth)
                if status != 200:
                    raise RuntimeError(f"diglot ({row}) answered HTTP {status}: {answer[:300]!r}")
                rows_g[row] = [oha.measure(row, "diglot", f"http://127.0.0.1:{g_port}/v1/chat/completions",
                                           body_openai(False), headers=auth, rate=rate, pids=[g_proc.pid])
                               for rate in cfg["rates"] + [None]]
                fleet.stop(g_proc)
            md += report_fleet(rows_f, rows_g["G1"], rows_g["G2"])

        # diglot must never fail a request in any row.
        for r in oha.runs:
            if r["target"] == "diglot":
                checked.append(r)
                if r["success"] < 1.0:
                    failures.append(f"{r['scenario']} diglot at {r['rate'] or 'max'}: success {r['success']:.2%} "
                                    f"({r['error']})")
        result["runs"] = oha.runs

        if mode == "full":
            md += check_targets(result, rows_a, rows_b, rows_c1, rows_c2, idle, rss_after_load, held)
            md += check_proxy_limit_targets(result)
    finally:
        fleet.stop_all()

    meta["busy_after"] = machine_busy(1.0 if args.smoke else 2.0)
    meta["seconds"] = round(time.monotonic() - t_start, 1)
    measured = [r for r in oha.runs if r.get("other_cores") is not None]
    if measured:
        mean = statistics.mean(r["other_cores"] for r in measured)
        worst = max(measured, key=lambda r: r["other_cores"])
        meta["other_cores_mean"] = mean
        noisy = [r for r in measured if r["other_cores"] > NOISY_CORES]
        text = (f"Other processes on the machine used {mean:.2f} cores on average while rows were measured "
                f"(most: {worst['other_cores']:.2f} during {worst['scenario']} {worst['target']} "
                f"{worst['rate'] or 'max'}); {len(noisy)} of {len(measured)} rows above {NOISY_CORES} cores are "
                "marked ⚠.")
        if noisy:
            text += " Those rows are noisy: rerun on a quiet machine (run.sh --wait-idle waits for one)."
        notes.append(text)
    header = [f"## diglot benchmark ({mode} run, {started:%Y-%m-%d %H:%M} UTC)", "",
              f"Machine: {meta['cpu_model']}, {meta['cores']} cores, {meta['mem_gib']:.0f} GiB, {meta['kernel']}; "
              f"load generator (oha {meta['oha']}, {cfg['open_conns']} connections open-loop with "
              "`--latency-correction`), mock and gateways share all cores, unpinned. "
              f"diglot {meta['git_commit'][:12]}{' (dirty)' if meta['git_dirty'] else ''}, {meta['rustc']}; "
              f"{meta['nginx']}; LiteLLM {meta['litellm'] or 'not installed'}. "
              f"{cfg['warmup']:g} s warm-up + {cfg['duration']:g} s per row. Latencies in ms, "
              "\"added\" = this path's percentile minus direct's at the same rate.", ""]
    if notes:
        md += ["### Notes", ""] + [f"- {n}" for n in notes] + [""]
    text = "\n".join(header + md)
    print(text)
    result["markdown"] = text
    result["notes"] = notes
    result["failures"] = failures
    path = os.path.join(out_dir, f"bench-{mode}-{stamp}.json")
    with open(path, "w") as f:
        json.dump(result, f, indent=1)
    with open(os.path.join(out_dir, f"bench-{mode}-{stamp}.md"), "w") as f:
        f.write(text + "\n")
    shutil.copy(path, os.path.join(out_dir, f"latest-{mode}.json"))
    print(f"\nJSON (raw oha output included): {path}")
    print(f"logs and configs: {args.work}  ({meta['seconds']:.0f} s in all)")
    if failures:
        print("\nFAILED: diglot did not answer every request:\n" + "\n".join(f"- {f}" for f in failures))
    # One line CI can read: each diglot row (and the open streams) is a check.
    bad_rows = sum(1 for r in checked if r["success"] < 1.0)
    passed = len(checked) - bad_rows + (1 if not mem_failed else 0)
    print(f"bench: {passed} passed, {bad_rows + (1 if mem_failed else 0)} failed")
    if failures:
        sys.exit(1)


def target_check(checks):
    """A function judging one target: it adds the verdict to `checks` (kept in the JSON)
    and returns the report's row."""

    def check(name, value, limit, ok, fmt="{:.3f} ms"):
        ok = value is not None and bool(ok)
        checks.append(dict(target=name, value=value, limit=limit, passed=ok))
        return [name, "—" if value is None else fmt.format(value), limit, "**PASS**" if ok else "**MISS**"]

    return check


def check_targets(result, rows_a, rows_b, rows_c1, rows_c2, idle, rss_after_load, held):
    """PASS/MISS for each target of issue 8; also stored in the JSON."""
    checks = []
    check = target_check(checks)

    rows = []
    for name, rs in (("A", rows_a), ("B", rows_b)):
        d, g, n = find(rs, "direct", TARGET_P99_RATE), find(rs, "diglot", TARGET_P99_RATE), find(rs, "nginx", TARGET_P99_RATE)
        if d and g and n:
            ag, an = sub(g["p50"], d["p50"]), sub(n["p50"], d["p50"])
            # nginx's own added p50 can be ~0 or negative in the noise; judge against at least 10 µs.
            rows.append(check(f"{name}: added p50 ≤ {TARGET_ADDED_VS_NGINX}× nginx's @{TARGET_P99_RATE} req/s (nginx: {an:+.3f} ms)",
                              ag, f"≤ {TARGET_ADDED_VS_NGINX * max(an, 0.01):.3f} ms", ag <= TARGET_ADDED_VS_NGINX * max(an, 0.01)))
            b = find(rs, "bare stack", TARGET_P99_RATE)
            if b:
                ab = sub(b["p50"], d["p50"])
                rows.append([f"{name}: the bare stack's added p50 (salvo + hyper's client, no diglot work; not a target)",
                             f"{ab:+.3f} ms = {ratio(ab, max(an, 0.01)):.1f}× nginx's", "—", "info"])
    for name, rs in (("A", rows_a), ("B", rows_b), ("C1", rows_c1), ("C2", rows_c2)):
        d, g = find(rs, "direct", TARGET_P99_RATE), find(rs, "diglot", TARGET_P99_RATE)
        if d and g:
            a99 = sub(g["p99"], d["p99"])
            rows.append(check(f"{name}: added p99 @{TARGET_P99_RATE} req/s", a99, f"≤ {TARGET_P99_ADDED_MS} ms",
                              a99 is not None and a99 <= TARGET_P99_ADDED_MS))
    g, l = find(rows_a, "diglot", None), find(rows_a, "LiteLLM", None)
    if g and l:
        r = ratio(g["ok_rps"], l["ok_rps"]) if l["ok_rps"] else float("inf")
        rows.append(check("A: max throughput ÷ LiteLLM's", r, f"≥ {TARGET_VS_LITELLM:g}×", r >= TARGET_VS_LITELLM, "{:.1f}×"))
    else:
        rows.append(["A: max throughput ÷ LiteLLM's", "—", f"≥ {TARGET_VS_LITELLM:g}×", "not measured"])
    for r in result["streaming"]:
        if r["target"] == "diglot":
            rows.append(check(f"D: chunks/s, {r['direction']}", r["chunks_per_s"], f"≥ {TARGET_CHUNKS_PER_S:,}",
                              r["chunks_per_s"] >= TARGET_CHUNKS_PER_S, "{:,.0f}"))
    for t in result["ttft"]:
        if t["paced"]:
            rows.append(check(f"D: added TTFT (paced upstream), {t['direction']}", t["added_ms"],
                              f"≤ {TARGET_TTFT_ADDED_MS} ms", t["added_ms"] <= TARGET_TTFT_ADDED_MS))
            if t.get("nginx_added_ms") is not None:
                rows.append(["D: nginx's added TTFT, same pairs (not a target)",
                             f"{t['nginx_added_ms']:.3f} ms", "—", "info"])
    # MB as 10^6 bytes, the stricter reading. "Idle" is a fresh process; after the load
    # above (allocator caches, pooled connections) is shown beside it, not judged.
    rows.append(check("E: idle RSS, fresh start", idle / 1e6, f"≤ {TARGET_IDLE_RSS_MB:g} MB",
                      idle <= TARGET_IDLE_RSS_MB * 1e6, "{:.1f} MB"))
    rows.append(["E: idle RSS after the load above (not a target)", f"{rss_after_load / 1e6:.1f} MB", "—", "info"])
    for count, opened, rss in held:
        per = (rss - idle) / max(1, opened) / 1024
        rows.append(check(f"E: per open stream at {count:,}", per, f"≤ {TARGET_STREAM_KIB:g} KiB", per <= TARGET_STREAM_KIB, "{:.1f} KiB"))
    result["targets"] = checks
    return ["### Targets (issue 8)", "", table(["target", "measured", "limit", "result"], rows), ""]


def at_least(value, limit):
    return value is not None and value >= limit


def at_most(value, limit):
    return value is not None and value <= limit


def check_proxy_limit_targets(result):
    """PASS/MISS for each target of issue 22, from what the run recorded (its rows, streams,
    first tokens and memory), as ratios within the run; added to the JSON's targets."""
    checks = []
    check = target_check(checks)
    runs = [r for r in result["runs"] if not r.get("reused")]

    def peak(scenario, target):
        row = find([r for r in runs if r["scenario"] == scenario], target, None)
        return row and row["ok_rps"]

    rows = []
    a, nginx, f = peak("A", "diglot"), peak("A", "nginx"), peak("F", "diglot")
    rows.append(check(f"A: max throughput ÷ nginx's ({f_int(a)} ÷ {f_int(nginx)} req/s)", ratio(a, nginx),
                      f"≥ {TARGET_MAX_VS_NGINX:g}×", at_least(ratio(a, nginx), TARGET_MAX_VS_NGINX), "{:.2f}×"))
    offered = [r for r in runs if r["target"] == "diglot" and r["rate"] and r["rate"] <= TARGET_HELD_UP_TO]
    # Held as the scenario tables judge it, and every request answered.
    missed = [f"{r['scenario']} @{r['rate']:,}" for r in offered if not held(r) or r["success"] < 1.0]
    rows.append(check(f"every open-loop rate up to {TARGET_HELD_UP_TO:,} req/s held, every scenario"
                      + (f" (missed: {', '.join(missed)})" if missed else ""),
                      len(offered) - len(missed) if offered else None, f"{len(offered)} of {len(offered)}",
                      offered and not missed, "{} held"))
    rows.append(check(f"F: features on, max ÷ A's ({f_int(f)} ÷ {f_int(a)} req/s)", ratio(f, a),
                      f"≥ {TARGET_FEATURES_VS_PLAIN:g}×", at_least(ratio(f, a), TARGET_FEATURES_VS_PLAIN), "{:.2f}×"))
    for direction in dict.fromkeys(r["direction"] for r in result["streaming"]):
        by = {r["target"]: r for r in result["streaming"] if r["direction"] == direction}
        dig, ngx = by.get("diglot"), by.get("nginx")
        chunks = ratio(dig and dig["chunks_per_s"], ngx and ngx["chunks_per_s"])
        rows.append(check(f"D: chunks/s ÷ nginx's, {direction}", chunks, f"≥ {TARGET_CHUNKS_VS_NGINX:g}×",
                          at_least(chunks, TARGET_CHUNKS_VS_NGINX), "{:.2f}×"))
        cpu = dig and dig["cpu_per_m_chunks"]
        rows.append(check(f"D: CPU per million chunks, {direction}", cpu, f"≤ {TARGET_CPU_S_PER_M_CHUNKS:g} s",
                          at_most(cpu, TARGET_CPU_S_PER_M_CHUNKS), "{:.2f} s"))
    for t in result["ttft"]:
        if t["paced"]:
            beside = "".join(f"; {hop} adds {t[key]:.3f} ms" for hop, key in (("the bare stack", "bare_added_ms"),
                                                                                ("nginx", "nginx_added_ms"))
                             if t.get(key) is not None)
            rows.append(check(f"D: added TTFT (paced upstream), {t['direction']}{beside}", t["added_ms"],
                              f"≤ {TARGET_TTFT_ADDED_TIGHT_MS} ms", at_most(t["added_ms"], TARGET_TTFT_ADDED_TIGHT_MS)))
    memory = result["memory"]
    for step in memory.get("steps", []):
        per = step["bytes_per_stream"] / 1024
        rows.append(check(f"E: RSS per open slow stream at {step['opened']:,}", per, f"≤ {TARGET_STREAM_TIGHT_KIB:g} KiB",
                          at_most(per, TARGET_STREAM_TIGHT_KIB), "{:.1f} KiB"))
    bare = memory.get("bare_stack")
    if bare:
        rows.append([f"E: the bare stack's RSS per open slow stream at {bare['opened']:,} (salvo + hyper, "
                     "no diglot work; not a target)", f"{bare['bytes_per_stream'] / 1024:.1f} KiB", "—", "info"])
    idle = memory.get("idle_fresh")
    idle_mib = idle / 2**20 if idle else None
    rows.append(check("E: idle RSS, fresh start", idle_mib, f"≤ {TARGET_IDLE_RSS_MIB:g} MiB",
                      at_most(idle_mib, TARGET_IDLE_RSS_MIB), "{:.1f} MiB"))
    result["targets"] += checks
    return ["### Targets toward the proxy limit (issue 22)", "", table(["target", "measured", "limit", "result"], rows), ""]


def machine_meta(args, mode):
    def cmd(argv, cwd=None):
        try:
            return subprocess.run(argv, capture_output=True, text=True, cwd=cwd, timeout=60).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return ""

    cpu = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kib = int(f.readline().split()[1])
    nginx_v = ""
    if args.nginx:
        p = subprocess.run([args.nginx, "-v"], capture_output=True, text=True)
        nginx_v = (p.stderr or p.stdout).strip().replace("nginx version: ", "")
    litellm_v = ""
    if args.litellm:
        py = os.path.join(os.path.dirname(args.litellm), "python")
        litellm_v = cmd([py, "-c", "import importlib.metadata as m; print(m.version('litellm'))"])
    return dict(
        mode=mode,
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(),
        git_commit=cmd(["git", "rev-parse", "HEAD"], cwd=args.repo),
        git_dirty=bool(cmd(["git", "status", "--porcelain", "--untracked-files=no"], cwd=args.repo)),
        cpu_model=cpu,
        cores=os.cpu_count(),
        mem_gib=mem_kib / 2**20,
        kernel=f"Linux {platform.release()}",
        rustc=cmd(["rustc", "--version"]),
        oha=cmd([args.oha, "--version"]).replace("oha ", ""),
        nginx=nginx_v,
        litellm=litellm_v,
        python=platform.python_version(),
        diglot_binary=args.diglot,
        mock_binary=args.mock,
        pinning="none (see bench.py's docstring)",
        open_files_limit=os.sysconf("SC_OPEN_MAX"),
    )


if __name__ == "__main__":
    main()
