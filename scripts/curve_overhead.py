#!/usr/bin/python3
"""Cost of CURVE (issue #7) on broker round trips, plain vs CURVE in the same run.

Starts two brokers from the same build (one plain, one with --auth/--curve-secret), each with
one connected worker, and alternates rounds against them:
  info:   sequential `info` round trips (msgpack over a DEALER, as docs/protocol.md says): the
          transport and the broker loop, without the journal or a worker;
  task:   sequential submit -> dispatch to the worker -> the task runs -> `done` event on the SUB;
          by default the worker's built-in `kbfleet.noop` (no sandbox, no fork), so this is the
          1-in-flight dispatch path of bench/dispatch; --plugin noop --handler ok runs the
          sandboxed fixture instead.
A first round warms both up and is not counted; the order of the two alternates per round.
Prints the medians over rounds and the CURVE/plain ratio. Loopback only.

  /usr/bin/python3 scripts/curve_overhead.py --bin build/bin --plugins tests/fixtures/plugins
"""

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time

import msgpack
import zmq

TAG = b"KBF/1"


def start(argv, log):
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=open(log, "w"), text=True)
    keys = {}
    while "metrics" not in keys:
        line = p.stdout.readline()
        if not line:
            raise SystemExit("process exited early; see " + log)
        k, _, v = line.strip().partition("=")
        keys[k] = v
    return p, keys


class Peer:
    def __init__(self, ctx, endpoint, events, curve):
        self.sock = ctx.socket(zmq.DEALER)
        self.sub = ctx.socket(zmq.SUB)
        for s in (self.sock, self.sub):
            s.linger = 0
            if curve:
                s.curve_serverkey, s.curve_publickey, s.curve_secretkey = (k.encode() for k in curve)
        self.sock.connect(endpoint)
        self.sub.connect(events)
        # Subscribed once, before any task: the client's whole tenant with CURVE (the broker
        # approves only `tenant.<name>.` or exact task topics), every task in plain mode. Each
        # task then waits for its own `done`, with no subscription racing the task.
        self.sub.setsockopt(zmq.SUBSCRIBE, b"tenant.bench." if curve else b"task.")
        self.req = 0

    def call(self, kind, body):
        self.req += 1
        body = dict(body, req=self.req)
        self.sock.send_multipart([TAG, kind, msgpack.packb(body, use_bin_type=True)])
        if not self.sock.poll(10000):
            raise SystemExit("no answer")
        frames = self.sock.recv_multipart()
        reply = msgpack.unpackb(frames[2], raw=False)
        if frames[1] == b"error":
            raise SystemExit("error reply: %r" % reply)
        return reply

    def run_task(self, plugin, handler):
        tid = self.call(b"submit", {"plugin": plugin, "handler": handler})["task_id"]
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.sub.poll(1000):
                ev = msgpack.unpackb(self.sub.recv_multipart()[3], raw=False)
                if ev.get("task_id") == tid and ev.get("type") == "done":
                    return
            elif self.call(b"events", {"task_id": tid, "from_seq": 1}).get("finished"):
                return  # PUB dropped it (docs/protocol.md): the replay says it is done
        raise SystemExit("task %s did not finish" % tid)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="build/bin")
    ap.add_argument("--plugins", default="tests/fixtures/plugins")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--submits", type=int, default=2000)
    ap.add_argument("--tasks", type=int, default=100)
    ap.add_argument("--plugin", default="kbfleet.noop")
    ap.add_argument("--handler", default="noop")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="kbfleet-curve-", dir=os.path.abspath("."))
    procs = []
    try:
        kbfleet = os.path.join(a.bin, "kbfleet")
        for name in ("broker", "client", "worker"):
            subprocess.run([kbfleet, "keygen", os.path.join(tmp, name)], check=True, stdout=subprocess.DEVNULL)

        def pub(name):
            for line in open(os.path.join(tmp, name + ".pub")):
                if "public-key" in line:
                    return line.split('"')[1]

        def sec(name):
            for line in open(os.path.join(tmp, name + ".key")):
                if "secret-key" in line:
                    return line.split('"')[1]

        with open(os.path.join(tmp, "allow.txt"), "w") as f:
            f.write("%s bench client\n%s fleet worker\n" % (pub("client"), pub("worker")))
        ctx = zmq.Context()
        peers = {}
        for mode in ("plain", "curve"):
            data = os.path.join(tmp, "data-" + mode)
            argv = [os.path.join(a.bin, "kbfleet-broker"), "--bind", "tcp://127.0.0.1:*", "--events",
                    "tcp://127.0.0.1:*", "--metrics", "", "--data", data, "--durability", "none"]
            if mode == "curve":
                argv += ["--auth", os.path.join(tmp, "allow.txt"), "--curve-secret", os.path.join(tmp, "broker.key")]
            p, ep = start(argv, os.path.join(tmp, "broker-%s.log" % mode))
            procs.append(p)
            work = os.path.join(tmp, "work-" + mode)
            os.makedirs(work)
            wargv = [os.path.join(a.bin, "kbfleet-worker"), "--broker", ep["bind"], "--plugins", a.plugins, "--work",
                     work, "--slots", "1", "--metrics", "127.0.0.1:0"]
            if a.plugin == "kbfleet.noop":
                wargv.append("--builtin-noop")
            if mode == "curve":
                wargv += ["--key", os.path.join(tmp, "worker.key"), "--broker-key", os.path.join(tmp, "broker.pub")]
            w, _ = start(wargv, os.path.join(tmp, "worker-%s.log" % mode))
            procs.append(w)
            curve = (pub("broker"), pub("client"), sec("client")) if mode == "curve" else None
            peers[mode] = Peer(ctx, ep["bind"], ep["events"], curve)
            while not peers[mode].call(b"workers", {})["workers"]:
                time.sleep(0.05)
        results = {(m, k): [] for m in peers for k in ("info", "task")}
        for r in range(a.rounds + 1):
            order = ["plain", "curve"] if r % 2 == 0 else ["curve", "plain"]
            for mode in order:
                peer = peers[mode]
                t = time.perf_counter()
                for _ in range(a.submits):
                    peer.call(b"info", {})
                if r > 0:
                    results[(mode, "info")].append((time.perf_counter() - t) / a.submits * 1e6)
                t = time.perf_counter()
                for _ in range(a.tasks):
                    peer.run_task(a.plugin, a.handler)
                if r > 0:
                    results[(mode, "task")].append((time.perf_counter() - t) / a.tasks * 1e3)
        for kind, unit in (("info", "us per info round trip"), ("task", "ms per task (submit -> done)")):
            p = statistics.median(results[("plain", kind)])
            c = statistics.median(results[("curve", kind)])
            print("%-6s plain=%.1f curve=%.1f %s  ratio curve/plain=%.3f" % (kind, p, c, unit, c / p))
    finally:
        for p in procs:
            p.kill()
            p.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
