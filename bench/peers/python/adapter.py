#!/usr/bin/env python3
"""leaderd benchmark adapter for the Python Redis lock libraries.

One candidate per process. It acquires the lock with the library's own
blocking acquire, renews it at the library's usual rate, releases it on
SIGTERM, and prints one line per event on stdout (the harness parses them):

    READY ts=<unix seconds> key=<redis key>
    ACQUIRED ts=<unix seconds>
    LOST ts=<unix seconds>        (a renewal failed: back to acquiring)
    RELEASED ts=<unix seconds>    (after SIGTERM while holding)

Libraries (--lib):

  redis-py           redis.lock.Lock: blocking acquire polls SET NX PX every
                     `sleep` = 0.1 s (the library default); the library has no
                     renewal of its own, so this adapter extends the lease
                     (extend(replace_ttl=True)) every lease/3, the rule of
                     Redisson's watchdog.
  python-redis-lock  redis_lock.Lock(expire=..., auto_renewal=True): waits on
                     BLPOP of its signal list (woken by a release, else after
                     `expire` seconds); its own thread renews every expire*2/3.
  pottery            pottery.Redlock over every --redis URL (1 or 3 masters):
                     retries after a random 0-0.2 s delay; no renewal of its
                     own and extend() is capped at num_extensions (default 3),
                     so the cap is lifted and the lease extended every lease/3.
"""

import argparse
import signal
import sys
import threading
import time


class Terminate(BaseException):
    """Raised from the SIGTERM/SIGINT handler to leave any blocking call."""


def say(event, extra=""):
    sys.stdout.write(f"{event} ts={time.time():.6f}{extra}\n")
    sys.stdout.flush()


def on_signal(_signum, _frame):
    raise Terminate()


def clients(urls):
    import redis

    return [redis.Redis.from_url(url) for url in urls]


def run_redis_py(args, stop):
    from redis.exceptions import LockError

    (client,) = clients(args.redis[:1])
    lease_s = args.lease_ms / 1000
    lock = client.lock(args.resource, timeout=lease_s, sleep=0.1, blocking=True)
    say("READY", f" key={args.resource}")
    while True:
        lock.acquire(blocking=True)
        say("ACQUIRED")
        try:
            while not stop.wait(lease_s / 3):
                try:
                    lock.extend(lease_s, replace_ttl=True)
                except LockError:
                    say("LOST")
                    break
        except Terminate:
            lock.release()
            say("RELEASED")
            raise


def run_python_redis_lock(args, stop):
    import redis_lock

    (client,) = clients(args.redis[:1])
    expire = args.lease_ms // 1000
    if expire * 1000 != args.lease_ms or expire < 1:
        raise SystemExit("python-redis-lock takes whole seconds: --lease-ms must be a multiple of 1000")
    lock = redis_lock.Lock(client, args.resource, expire=expire, auto_renewal=True)
    say("READY", f" key=lock:{args.resource}")
    lock.acquire(blocking=True)
    say("ACQUIRED")
    try:
        # Renewal happens in the library's own thread (every expire*2/3); a
        # failed renewal there is not reported to the holder, so LOST is
        # never printed for this library.
        while not stop.wait(3600):
            pass
    except Terminate:
        lock.release()
        say("RELEASED")
        raise


def run_pottery(args, stop):
    from pottery import Redlock
    from pottery.exceptions import ExtendUnlockedLock

    masters = set(clients(args.redis))
    lease_s = args.lease_ms / 1000
    lock = Redlock(
        key=args.resource,
        masters=masters,
        auto_release_time=lease_s,
        num_extensions=sys.maxsize,
    )
    say("READY", f" key=redlock:{args.resource}")
    while True:
        lock.acquire(blocking=True)
        say("ACQUIRED")
        try:
            while not stop.wait(lease_s / 3):
                try:
                    lock.extend()
                except ExtendUnlockedLock:
                    say("LOST")
                    break
        except Terminate:
            lock.release()
            say("RELEASED")
            raise


LIBS = {
    "redis-py": run_redis_py,
    "python-redis-lock": run_python_redis_lock,
    "pottery": run_pottery,
}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lib", required=True, choices=sorted(LIBS))
    parser.add_argument("--redis", action="append", required=True, help="redis:// URL (repeat for Redlock masters)")
    parser.add_argument("--resource", required=True)
    parser.add_argument("--lease-ms", type=int, required=True)
    parser.add_argument("--identity", default="")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    # Never set: the Event only serves as an interruptible sleep.
    stop = threading.Event()
    try:
        LIBS[args.lib](args, stop)
    except Terminate:
        pass
    sys.stdout.flush()
    # Daemon threads (python-redis-lock's renewer) must not keep us alive.
    sys.exit(0)


if __name__ == "__main__":
    main()
