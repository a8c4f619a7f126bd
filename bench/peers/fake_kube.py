#!/usr/bin/env python3
"""A minimal fake Kubernetes API server for benchmarking leaderd's Lease
backend: coordination.k8s.io/v1 Leases only, in memory, on 127.0.0.1.

  GET    /apis/coordination.k8s.io/v1/namespaces/{ns}/leases/{name}   200, or 404 Status
  POST   /apis/coordination.k8s.io/v1/namespaces/{ns}/leases          201, or 409 AlreadyExists
  PUT    /apis/coordination.k8s.io/v1/namespaces/{ns}/leases/{name}   compare-and-swap on
         metadata.resourceVersion: 409 Conflict if missing or stale, 404 if absent
  GET    .../leases?watch=true&fieldSelector=metadata.name=X&resourceVersion=N
         chunked stream of {"type": "ADDED|MODIFIED|DELETED", "object": ...}: the
         current object as ADDED when N is 0 or absent, else every change after N;
         ends after timeoutSeconds
  GET    .../leases?fieldSelector=...     a LeaseList
  GET    /_bench/leases/{ns}/{name}       for the harness: the Lease plus
         "_written": the server's wall-clock time (unix seconds) of its last write

Every write bumps a global resourceVersion, as etcd's revision. It keeps the
rules of the real API server that leaderd's Lease backend relies on (the
tests run against a real kube-apiserver; this fake only gives the benchmark
a comparison row).

Usage: fake_kube.py PORT   (prints "READY" once listening)
"""

from __future__ import annotations

import copy
import json
import re
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LEASES = re.compile(r"^/apis/coordination\.k8s\.io/v1/namespaces/([^/]+)/leases(?:/([^/]+))?$")
BENCH = re.compile(r"^/_bench/leases/([^/]+)/([^/]+)$")


class Store:
    def __init__(self):
        self.cond = threading.Condition()
        self.version = 0
        self.leases: dict[tuple[str, str], dict] = {}
        self.written: dict[tuple[str, str], float] = {}
        self.events: list[tuple[int, str, str, str, dict]] = []  # (rv, ns, name, type, object)

    def commit(self, ns, name, obj, kind):
        self.version += 1
        obj.setdefault("metadata", {})
        obj["metadata"].update({"name": name, "namespace": ns, "resourceVersion": str(self.version)})
        obj["apiVersion"] = "coordination.k8s.io/v1"
        obj["kind"] = "Lease"
        self.leases[(ns, name)] = obj
        self.written[(ns, name)] = time.time()
        self.events.append((self.version, ns, name, kind, copy.deepcopy(obj)))
        del self.events[:-1000]
        self.cond.notify_all()
        return obj


STORE = Store()


def status(code: int, reason: str, message: str) -> dict:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Small responses must not wait for delayed ACKs (Nagle): that alone
    # would add ~40 ms to a handover.
    disable_nagle_algorithm = True

    def log_message(self, *args):  # quiet
        pass

    def send_json(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def body(self) -> dict:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length) or b"{}")

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        m = BENCH.match(url.path)
        if m:
            ns, name = m.groups()
            with STORE.cond:
                obj = STORE.leases.get((ns, name))
                if obj is None:
                    return self.send_json(404, status(404, "NotFound", "not found"))
                return self.send_json(200, dict(obj, _written=STORE.written[(ns, name)]))
        m = LEASES.match(url.path)
        if not m:
            return self.send_json(404, status(404, "NotFound", f"no route for {url.path}"))
        ns, name = m.groups()
        if name:
            with STORE.cond:
                obj = STORE.leases.get((ns, name))
            if obj is None:
                return self.send_json(404, status(404, "NotFound", f'leases.coordination.k8s.io "{name}" not found'))
            return self.send_json(200, obj)
        wanted = None
        selector = query.get("fieldSelector", "")
        if selector.startswith("metadata.name="):
            wanted = selector.split("=", 1)[1]
        if query.get("watch") in ("true", "1"):
            return self.watch(ns, wanted, query)
        with STORE.cond:
            items = [o for (n, k), o in STORE.leases.items() if n == ns and (wanted is None or k == wanted)]
            rv = str(STORE.version)
        return self.send_json(200, {"kind": "LeaseList", "apiVersion": "coordination.k8s.io/v1",
                                    "metadata": {"resourceVersion": rv}, "items": items})

    def watch(self, ns, wanted, query):
        timeout = min(float(query.get("timeoutSeconds") or 290), 290)
        since = int(query.get("resourceVersion") or 0)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

        def chunk(event):
            data = json.dumps(event).encode() + b"\n"
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

        deadline = time.monotonic() + timeout
        try:
            with STORE.cond:
                if since == 0:
                    pending = [("ADDED", o) for (n, k), o in STORE.leases.items()
                               if n == ns and (wanted is None or k == wanted)]
                    since = STORE.version
                else:
                    pending = []
            for kind, obj in pending:
                chunk({"type": kind, "object": obj})
            while time.monotonic() < deadline:
                with STORE.cond:
                    STORE.cond.wait_for(lambda: STORE.version > since, timeout=max(0.0, deadline - time.monotonic()))
                    events = [e for e in STORE.events if e[0] > since]
                    since = STORE.version
                for _rv, n, k, kind, obj in events:
                    if n == ns and (wanted is None or k == wanted):
                        chunk({"type": kind, "object": obj})
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        self.close_connection = True

    def do_POST(self):
        m = LEASES.match(urllib.parse.urlsplit(self.path).path)
        obj = self.body()  # read even when refused: the connection is kept alive
        if not m or m.group(2):
            # e.g. leaderd's Events: not part of what this fake serves.
            return self.send_json(404, status(404, "NotFound", "no route"))
        ns = m.group(1)
        name = obj.get("metadata", {}).get("name")
        if not name:
            return self.send_json(422, status(422, "Invalid", "metadata.name: Required value"))
        with STORE.cond:
            if (ns, name) in STORE.leases:
                return self.send_json(409, status(409, "AlreadyExists",
                                                  f'leases.coordination.k8s.io "{name}" already exists'))
            obj.get("metadata", {}).pop("resourceVersion", None)
            created = STORE.commit(ns, name, obj, "ADDED")
            return self.send_json(201, created)

    def do_PUT(self):
        m = LEASES.match(urllib.parse.urlsplit(self.path).path)
        obj = self.body()  # read even when refused: the connection is kept alive
        if not m or not m.group(2):
            return self.send_json(404, status(404, "NotFound", "no route"))
        ns, name = m.groups()
        rv = obj.get("metadata", {}).get("resourceVersion")
        with STORE.cond:
            current = STORE.leases.get((ns, name))
            if current is None:
                return self.send_json(404, status(404, "NotFound", f'leases.coordination.k8s.io "{name}" not found'))
            if rv != current["metadata"]["resourceVersion"]:
                return self.send_json(409, status(
                    409, "Conflict",
                    f'Operation cannot be fulfilled on leases.coordination.k8s.io "{name}": '
                    "the object has been modified; please apply your changes to the latest version and try again"))
            updated = STORE.commit(ns, name, obj, "MODIFIED")
            return self.send_json(200, updated)


def main():
    port = int(sys.argv[1])
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    print("READY", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
