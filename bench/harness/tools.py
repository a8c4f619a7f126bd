"""The tools under test: leaderd and the peer libraries' adapters.

Each tool starts *candidates* (one process each) for one election on given
Redis URLs and tells from a candidate's output when it became leader. All
output goes to a file per candidate; `Candidate.poll()` reads what is new.

- leaderd: its own log on stderr (text format, no ANSI since it is not a
  terminal): `2026-11-26T14:56:01.467642Z  INFO became leader token=2`.
- peers: the adapters under bench/peers/ print `READY ts=…`, `ACQUIRED ts=…`,
  `LOST ts=…`, `RELEASED ts=…` with the wall-clock time of the event.

Both clocks are this machine's wall clock (CLOCK_REALTIME), the same clock
the harness reads with time.time() right before it sends a signal.

To add a tool (e.g. leaderd in quorum mode, or with the Kubernetes backend
against the fake API server), subclass `Tool`: `argv()` for one candidate,
`parse()` for its output, `key()` for the Redis key holding its lease.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from . import procs

BENCH = Path(__file__).resolve().parent.parent
_config_ids = itertools.count(1)
_log_ids = itertools.count(1)  # one fresh log file per candidate process
REPO = BENCH.parent


@dataclass
class Event:
    kind: str  # ready | settled | acquired | lost | released | shutdown
    ts: float  # unix seconds (wall clock)
    extra: str = ""


def rfc3339_to_unix(text: str) -> float:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


class Candidate:
    """One running candidate and the events read from its output so far."""

    def __init__(self, tool: "Tool", identity: str, proc: subprocess.Popen, log: Path):
        self.tool = tool
        self.identity = identity
        self.proc = proc
        self.log = log
        self.events: list[Event] = []
        self._offset = 0
        self._partial = b""
        self.holding = False
        self.settled = False
        self.listen: str | None = None
        self.killed_with: int | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None and self.killed_with is None

    def poll(self) -> list[Event]:
        """Reads new output; returns the new events."""
        try:
            with open(self.log, "rb") as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return []
        if not data:
            return []
        self._offset += len(data)
        data = self._partial + data
        lines = data.split(b"\n")
        self._partial = lines.pop()
        new = []
        for raw in lines:
            event = self.tool.parse(raw.decode("utf-8", "replace"), self)
            if event is None:
                continue
            if event.kind == "acquired":
                self.holding = True
                self.settled = True
            elif event.kind in ("lost", "released", "shutdown"):
                self.holding = False
            elif event.kind == "settled":
                self.settled = True
            self.events.append(event)
            new.append(event)
        return new

    def first(self, kind: str, after: float = 0.0) -> Event | None:
        self.poll()
        for event in self.events:
            if event.kind == kind and event.ts > after:
                return event
        return None


class Tool:
    name = "tool"  # short id used in file names and --peers
    label = "tool"  # shown in tables
    renewal = ""  # how it renews, for the table
    waits = ""  # how followers wait, for the table
    nodes = 1  # Redis masters it uses

    def argv(self, identity: str, urls: list[str], election: str, workdir: Path) -> list[str]:
        raise NotImplementedError

    def parse(self, line: str, cand: Candidate) -> Event | None:
        raise NotImplementedError

    def key(self, election: str) -> str:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        return {}

    def prepare(self, servers: list, election: str) -> None:
        """Readies `servers` for `election` before any candidate starts
        (nothing for most tools)."""

    # Where the tool keeps its lease: Redis servers by default.
    redis = True

    def servers(self, workdir: Path, tag: str) -> list:
        from .redis_server import RedisServer

        return [RedisServer(workdir, f"{self.name}-{tag}{i}") for i in range(self.nodes)]

    def expiry(self, servers: list, election: str) -> tuple[float, float] | None:
        """When the lease of a holder killed just now becomes free, as
        (unix seconds, ± uncertainty); None if unknown."""
        from .scenarios import lease_expiry

        return lease_expiry(servers, self.key(election))

    def available(self) -> str | None:
        """None when usable, else why not."""
        return None

    def start(self, identity: str, urls: list[str], election: str, workdir: Path) -> Candidate:
        log = workdir / f"{self.name}-{identity}-{next(_log_ids)}.log"
        argv = self.argv(identity, urls, election, workdir)
        proc = procs.spawn_logged(argv, log, both=True, env=self.env())
        return Candidate(self, identity, proc, log)


class Leaderd(Tool):
    name = "leaderd"
    label = "leaderd"
    renewal = "every retry_period (0.5 s)"
    waits = "sleeps until the observed expiry (≤ 0.5 s), woken by pub/sub on release"

    LINE = re.compile(r"^(\d{4}-\d\d-\d\dT[0-9:.]+Z)\s+(INFO|WARN|ERROR|DEBUG)\s+(.*)$")
    LISTEN = re.compile(r"listen=(\S+)")

    def __init__(self, binary: Path, lease_ms=2000, renew_ms=1500, retry_ms=500, listen_port0=True,
                 extra_yaml: str = "", extra_args: tuple[str, ...] = (), identity_yaml=None):
        self.binary = binary
        self.lease_ms, self.renew_ms, self.retry_ms = lease_ms, renew_ms, retry_ms
        self.listen_port0 = listen_port0
        # More top-level config sections (e.g. a leader_process).
        self.extra_yaml = extra_yaml
        # More `leaderd run` arguments (e.g. --observe).
        self.extra_args = tuple(extra_args)
        # identity -> more YAML for that candidate only (e.g. its own health
        # probe); each such candidate gets its own config file.
        self.identity_yaml = identity_yaml
        self._configs: dict[tuple, Path] = {}

    def available(self):
        return None if self.binary.exists() else f"{self.binary} not built"

    def config(self, urls: list[str], election: str, workdir: Path, identity: str | None = None) -> Path:
        own = self.identity_yaml(identity) if self.identity_yaml and identity else ""
        key = (tuple(urls), election, identity if own else None)
        if key not in self._configs:
            path = workdir / f"{self.name}-{election}-{next(_config_ids)}.yaml"
            path.write_text(
                "election:\n"
                f"  name: {election}\n"
                f"  lease_duration: {self.lease_ms}ms\n"
                f"  renew_deadline: {self.renew_ms}ms\n"
                f"  retry_period: {self.retry_ms}ms\n"
                "backend:\n"
                "  redis:\n"
                f"    urls: {json.dumps(urls)}\n"
                + self.extra_yaml
                + own
            )
            self._configs[key] = path
        return self._configs[key]

    def prepare(self, servers, election):
        """Gives `election` a fencing counter on every server, as a store
        that has run the election before has. A brand-new store has none,
        and leaderd cannot tell it from a store that lost its data: it grants
        nothing for one lease_duration (its quarantine) before the first
        term. That one-time wait is measured on its own (scenario 8), never
        inside another figure. The counter starts where leaderd would start
        it (the server's clock in microseconds); NX leaves an existing one."""
        for server in servers:
            seconds, micros = server.client.time()
            server.client.set(self.fence_key(election), str(seconds * 1_000_000 + micros), nx=True)

    def fence_key(self, election):
        return f"leaderd:{{{election}}}:fence"

    def argv(self, identity, urls, election, workdir, listen="127.0.0.1:0"):
        return [
            str(self.binary), "run",
            "--config", str(self.config(urls, election, workdir, identity)),
            "--identity", identity,
            "--listen", listen,
            *self.extra_args,
        ]

    def start(self, identity, urls, election, workdir, listen="127.0.0.1:0", taskset: str | None = None):
        log = workdir / f"{self.name}-{identity}-{next(_log_ids)}.log"
        argv = self.argv(identity, urls, election, workdir, listen)
        if taskset:
            argv = ["taskset", "-c", taskset] + argv
        proc = procs.spawn_logged(argv, log, both=True, env=self.env())
        return Candidate(self, identity, proc, log)

    def env(self):
        return {"LEADERD_LOG": "info", "LEADERD_LOG_FORMAT": "text", "NO_COLOR": "1"}

    def key(self, election):
        return f"leaderd:{{{election}}}:lock"

    def parse(self, line, cand):
        m = self.LINE.match(line)
        if not m:
            return None
        ts_text, _level, message = m.groups()
        if message.startswith("became leader"):
            kind = "acquired"
        elif message.startswith("new leader observed"):
            kind = "settled"
        elif message.startswith("leaderd started"):
            kind = "ready"
            listen = self.LISTEN.search(message)
            if listen:
                cand.listen = listen.group(1)
        elif message.startswith("stepped down"):
            kind = "lost"
        elif message.startswith("released the lease"):
            kind = "released"
        elif message.startswith("shutting down"):
            kind = "shutdown"
        elif message.startswith("handing over"):
            kind = "handing_over"
        else:
            return None
        return Event(kind, rfc3339_to_unix(ts_text), message)


class Adapter(Tool):
    """A peer library driven by one of the adapters in bench/peers/."""

    LINE = re.compile(r"^(READY|ACQUIRED|LOST|RELEASED) ts=([0-9.]+)(.*)$")
    KINDS = {"READY": "ready", "ACQUIRED": "acquired", "LOST": "lost", "RELEASED": "released"}
    key_prefix = ""
    lease_ms = 2000

    def parse(self, line, cand):
        m = self.LINE.match(line)
        if not m:
            return None
        word, ts, extra = m.groups()
        return Event(self.KINDS[word], float(ts), extra.strip())

    def key(self, election):
        return self.key_prefix + election

    def common_args(self, identity, urls, election):
        args = ["--resource", election, "--lease-ms", str(self.lease_ms), "--identity", identity]
        for url in urls:
            args += ["--redis", url]
        return args


class PythonAdapter(Adapter):
    lib = ""

    def __init__(self, python: Path, nodes: int = 1):
        self.python = python
        self.nodes = nodes

    def available(self):
        check = subprocess.run(
            [str(self.python), "-c", f"import {self.module}"], capture_output=True, timeout=60
        )
        return None if check.returncode == 0 else f"python module {self.module} missing in {self.python}"

    def argv(self, identity, urls, election, workdir):
        return [str(self.python), str(BENCH / "peers/python/adapter.py"), "--lib", self.lib] + self.common_args(
            identity, urls, election
        )


class RedisPyLock(PythonAdapter):
    name = "redis-py"
    label = "redis-py Lock"
    lib = "redis-py"
    module = "redis"
    renewal = "extend(replace_ttl) every lease/3 (adapter; no built-in renewal)"
    waits = "polls SET NX every 0.1 s (library default `sleep`)"


class PythonRedisLock(PythonAdapter):
    name = "python-redis-lock"
    label = "python-redis-lock"
    lib = "python-redis-lock"
    module = "redis_lock"
    key_prefix = "lock:"
    renewal = "auto_renewal thread every expire·2/3 (1.33 s)"
    waits = "BLPOP on a signal list (woken by release), timeout = expire (2 s)"


class PotteryRedlock(PythonAdapter):
    name = "pottery"
    label = "pottery Redlock"
    lib = "pottery"
    module = "pottery"
    key_prefix = "redlock:"
    renewal = "extend() every lease/3 (adapter; num_extensions cap lifted)"
    waits = "retries after a random 0–0.2 s delay"

    def __init__(self, python, nodes=1):
        super().__init__(python, nodes)
        if nodes > 1:
            self.name = f"pottery-{nodes}n"
            self.label = f"pottery Redlock, {nodes} nodes"


class NodeRedlock(Adapter):
    name = "node-redlock"
    label = "npm redlock"
    renewal = "extend 500 ms before expiry (redlock 5 `using` rule)"
    waits = "retries every 200 ± 100 ms (library defaults, retryCount -1)"

    def __init__(self, node: str, nodes: int = 1):
        self.node = node
        self.nodes = nodes
        if nodes > 1:
            self.name = f"node-redlock-{nodes}n"
            self.label = f"npm redlock, {nodes} nodes"

    def available(self):
        if not self.node:
            return "node is not installed"
        if not (BENCH / "peers/node/node_modules/redlock").exists():
            return "bench/peers/node/node_modules missing (npm ci failed or was skipped)"
        return None

    def argv(self, identity, urls, election, workdir):
        return [self.node, str(BENCH / "peers/node/adapter.js")] + self.common_args(identity, urls, election)


class Rslock(Adapter):
    name = "rslock"
    label = "rslock (Rust)"
    renewal = "extend 500 ms before validity ends (rslock `using` rule)"
    waits = "3 tries with random 0–200 ms delays, then again (acquire loop)"
    binary = BENCH / "peers/rslock/target/release/bench-rslock-adapter"

    def available(self):
        return None if self.binary.exists() else "rslock adapter not built (bench/peers/rslock)"

    def argv(self, identity, urls, election, workdir):
        return [str(self.binary)] + self.common_args(identity, urls, election)


class LeaderdKube(Leaderd):
    """leaderd with the Kubernetes Lease backend, against bench/peers/fake_kube.py."""

    name = "leaderd-kube"
    label = "leaderd, Kubernetes Lease (fake API server)"
    renewal = "every retry_period (0.5 s): a PUT with the resourceVersion last seen (GET only after a 409)"
    waits = "until the lease's observed expiry (≤ 0.5 s), woken by a watch event"
    redis = False

    def __init__(self, binary: Path, python: Path):
        super().__init__(binary)
        self.python = python

    def servers(self, workdir, tag):
        return [FakeKube(workdir, self.python, tag)]

    def prepare(self, servers, election):
        """A Lease has no fencing counter to prepare."""

    def config(self, urls, election, workdir, identity=None):
        key = (tuple(urls), election)
        if key not in self._configs:
            path = workdir / f"{self.name}-{election}-{next(_config_ids)}.yaml"
            path.write_text(
                "election:\n"
                f"  name: {election}\n"
                f"  lease_duration: {self.lease_ms}ms\n"
                f"  renew_deadline: {self.renew_ms}ms\n"
                f"  retry_period: {self.retry_ms}ms\n"
                "backend:\n"
                "  kubernetes:\n"
                "    namespace: bench\n"
                f"    lease_name: {election}\n"
                "kubernetes:\n"
                f"  api_url: {urls[0]}\n"
            )
            self._configs[key] = path
        return self._configs[key]

    def expiry(self, servers, election):
        lease = servers[0].lease("bench", election)
        if not lease:
            return None
        return lease["_written"] + lease["spec"]["leaseDurationSeconds"], 0.001


class FakeKube:
    """bench/peers/fake_kube.py on a free loopback port."""

    def __init__(self, workdir: Path, python: Path, tag: str):
        import urllib.request

        self._urlopen = urllib.request.urlopen
        self.port = procs.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        log = workdir / f"fake-kube-{tag}-{self.port}.log"
        self.proc = procs.spawn_logged([str(python), str(BENCH / "peers/fake_kube.py"), str(self.port)], log, both=True)
        procs.wait_until(self._up, 10, 0.02, "the fake Kubernetes API server")

    def _up(self):
        if self.proc.poll() is not None:
            raise RuntimeError("fake_kube.py exited")
        try:
            self._urlopen(self.url + "/_bench/leases/x/y", timeout=1)
        except Exception as err:  # 404 answers (HTTPError) mean it is up
            return getattr(err, "code", None) == 404
        return True

    @property
    def pid(self):
        return self.proc.pid

    def lease(self, ns, name):
        try:
            with self._urlopen(f"{self.url}/_bench/leases/{ns}/{name}", timeout=2) as r:
                return json.loads(r.read())
        except Exception:
            return None

    def stop(self):
        procs.stop(self.proc)


class LeaderdKubeReal(LeaderdKube):
    """leaderd with the Kubernetes Lease backend against a real kube-apiserver
    v1.37.2 + etcd v3.6.16 on loopback (scripts/kube-up), as the admin."""

    name = "leaderd-kube-real"
    label = "leaderd, Kubernetes Lease (kube-apiserver 1.37.2)"

    def __init__(self, binary: Path, python: Path):
        super().__init__(binary, python)
        self.kubeconfig: Path | None = None

    def available(self):
        return RealKube.available()

    def servers(self, workdir, tag):
        server = RealKube(workdir, tag)
        self.kubeconfig = server.kubeconfig
        return [server]

    def config(self, urls, election, workdir, identity=None):
        key = (tuple(urls), election)
        if key not in self._configs:
            path = workdir / f"{self.name}-{election}-{next(_config_ids)}.yaml"
            path.write_text(
                "election:\n"
                f"  name: {election}\n"
                f"  lease_duration: {self.lease_ms}ms\n"
                f"  renew_deadline: {self.renew_ms}ms\n"
                f"  retry_period: {self.retry_ms}ms\n"
                "backend:\n"
                "  kubernetes:\n"
                f"    namespace: {RealKube.NAMESPACE}\n"
                f"    lease_name: {election}\n"
            )
            self._configs[key] = path
        return self._configs[key]

    def env(self):
        return dict(super().env(), KUBECONFIG=str(self.kubeconfig))

    def expiry(self, servers, election):
        written = servers[0].last_write(RealKube.NAMESPACE, election)
        lease = servers[0].lease(RealKube.NAMESPACE, election)
        if written is None or not lease:
            return None
        return written + lease["spec"]["leaseDurationSeconds"], 0.001


class RealKube:
    """scripts/kube-up: etcd and kube-apiserver on loopback. The Lease's last
    write time comes from the API server's audit log (when the server
    finished the request, on this machine's wall clock)."""

    NAMESPACE = "bench"

    @staticmethod
    def available():
        build = subprocess.run([str(REPO / "scripts/kube-build"), "etcd", "kube-apiserver"],
                               capture_output=True, text=True)
        if build.returncode != 0:
            return "scripts/kube-build failed: " + (build.stderr.strip().splitlines() or ["?"])[-1]
        return None

    def __init__(self, workdir: Path, tag: str):
        import base64
        import ssl
        import urllib.request

        log = open(workdir / f"kube-up-{tag}.log", "wb")
        self.proc = subprocess.Popen([str(REPO / "scripts/kube-up")], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=log)
        ready = ""
        while not ready.startswith("ready "):
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"scripts/kube-up ended before it was ready (see {log.name})")
            ready = line.decode()
        fields = dict(kv.split("=", 1) for kv in ready.split()[1:])
        self.kubeconfig = Path(fields["kubeconfig"])
        self.url = fields["server"]
        self.audit_log = Path(fields["audit_log"])
        text = self.kubeconfig.read_text()
        ca = re.search(r"certificate-authority-data: (\S+)", text).group(1)
        self.token = re.search(r"token: (\S+)", text).group(1)
        self.ssl = ssl.create_default_context(cadata=base64.b64decode(ca).decode())
        self._urlopen = urllib.request.urlopen
        self._request = urllib.request.Request
        self.call("POST", "/api/v1/namespaces",
                  {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": self.NAMESPACE}})

    def call(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = self._request(self.url + path, data=data, method=method, headers={
            "Authorization": f"Bearer {self.token}", "Content-Type": "application/json"})
        with self._urlopen(req, timeout=5, context=self.ssl) as r:
            return json.loads(r.read())

    @property
    def pid(self):
        return self.proc.pid

    def lease(self, ns, name):
        try:
            return self.call("GET", f"/apis/coordination.k8s.io/v1/namespaces/{ns}/leases/{name}")
        except Exception:
            return None

    def last_write(self, ns, name):
        """Unix time at which the API server finished the last write of the Lease."""
        last = None
        with open(self.audit_log, encoding="utf-8") as f:
            for line in f:
                if f'"name":"{name}"' not in line:
                    continue
                event = json.loads(line)
                ref = event.get("objectRef", {})
                if (event.get("stage") == "ResponseComplete" and ref.get("resource") == "leases"
                        and ref.get("namespace") == ns and event.get("verb") in ("create", "update")
                        and event.get("responseStatus", {}).get("code", 0) < 300):
                    last = rfc3339_to_unix(event["stageTimestamp"])
        return last

    def stop(self):
        # EOF on its stdin: kube-up stops etcd and kube-apiserver itself.
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=30)
        except Exception:
            procs.stop(self.proc)


@dataclass
class Todo:
    """A row that cannot be measured yet, with the reason."""

    label: str
    reason: str
    scenarios: str = ""
    done: bool = False
