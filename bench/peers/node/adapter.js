#!/usr/bin/env node
// leaderd benchmark adapter for the npm `redlock` package (4.2 API) over
// ioredis clients, one client per --redis URL (1 or 3 masters).
//
// Acquires with redlock.lock(resource, ttl) and retryCount -1 (retry until
// acquired; the library's default delay of 200 ms ± 100 ms jitter between
// attempts), renews with lock.extend(ttl) 500 ms before the lock's
// expiration (the rule of redlock 5's `using`, automaticExtensionThreshold
// 500 ms; 4.2 has no automatic extension), releases with lock.unlock() on
// SIGTERM, and prints one line per event on stdout:
//
//   READY ts=<unix seconds> key=<redis key>
//   ACQUIRED ts=<unix seconds>
//   LOST ts=<unix seconds>        (an extension failed: back to acquiring)
//   RELEASED ts=<unix seconds>    (after SIGTERM while holding)
//
// Usage: node adapter.js --resource NAME --lease-ms MS --redis URL [--redis URL ...]
'use strict';

const Redis = require('ioredis');
const Redlock = require('redlock');

function now() {
  // Date.now() has millisecond resolution; add the sub-millisecond part from
  // the high-resolution clock so that timestamps have microseconds.
  const ms = performance.timeOrigin + performance.now();
  return (ms / 1000).toFixed(6);
}

function say(event, extra = '') {
  process.stdout.write(`${event} ts=${now()}${extra}\n`);
}

function parseArgs(argv) {
  const args = { redis: [] };
  for (let i = 0; i < argv.length; i += 2) {
    const flag = argv[i];
    const value = argv[i + 1];
    if (value === undefined) throw new Error(`${flag} needs a value`);
    if (flag === '--redis') args.redis.push(value);
    else if (flag === '--resource') args.resource = value;
    else if (flag === '--lease-ms') args.leaseMs = Number(value);
    else if (flag === '--identity') args.identity = value;
    else throw new Error(`unknown flag ${flag}`);
  }
  if (!args.resource || !args.leaseMs || args.redis.length === 0) {
    throw new Error('usage: adapter.js --resource NAME --lease-ms MS --redis URL [--redis URL ...]');
  }
  return args;
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const clients = args.redis.map((url) => new Redis(url, { lazyConnect: false }));
  // Acquire: retry until acquired. Extend: the library's defaults (up to 10
  // retries), since with retryCount -1 a lost lock would be retried forever.
  const redlock = new Redlock(clients, { retryCount: -1 });
  const extender = new Redlock(clients);
  redlock.on('clientError', () => {});
  extender.on('clientError', () => {});

  let lock = null;
  let timer = null;
  let stopping = false;

  async function stop() {
    if (stopping) return;
    stopping = true;
    if (timer) clearTimeout(timer);
    if (lock) {
      const held = lock;
      lock = null;
      try {
        await held.unlock();
      } catch (err) {
        // the lock already expired: nothing to release
      }
      say('RELEASED');
    }
    clients.forEach((c) => c.disconnect());
    process.exit(0);
  }
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);

  say('READY', ` key=${args.resource}`);
  for (;;) {
    lock = await redlock.lock(args.resource, args.leaseMs);
    if (stopping) return;
    say('ACQUIRED');
    // Renew 500 ms before expiration until an extension fails.
    await new Promise((resolve) => {
      const schedule = () => {
        const wait = Math.max(1, lock.expiration - Date.now() - 500);
        timer = setTimeout(async () => {
          if (stopping || !lock) return;
          try {
            lock = await extender.extend(lock, args.leaseMs);
            schedule();
          } catch (err) {
            if (stopping) return;
            lock = null;
            say('LOST');
            resolve();
          }
        }, wait);
      };
      schedule();
    });
  }
}

main().catch((err) => {
  process.stderr.write(`redlock adapter: ${err && err.stack ? err.stack : err}\n`);
  process.exit(1);
});
