#!/usr/bin/python3
"""Tasks/s of the `hello` example through a real broker and N workers on loopback.

A first figure only; the benchmark suite with baselines measured in the same run is issue #6.
Usage: bench/hello_throughput.py [--tasks 500] [--workers 2] [--slots 2] [--bin build/bin]
Submits all tasks pipelined over one DEALER, then waits for every `done` on the event stream
(subscribed to the "task." prefix before submitting) and prints tasks/s and latency percentiles.
"""
import argparse, os, shutil, subprocess, sys, tempfile, time
import msgpack, zmq

def start(argv, log):
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=open(log, "w"), text=True)

def read_keys(proc, keys, deadline):
    found = {}
    while len(found) < len(keys) and time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        k, _, v = line.strip().partition("=")
        if k in keys:
            found[k] = v
    return found

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", type=int, default=500)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--slots", type=int, default=2)
    ap.add_argument("--bin", default=os.path.join(os.path.dirname(__file__), "..", "build", "bin"))
    ap.add_argument("--plugins", default=os.path.join(os.path.dirname(__file__), "..", "examples", "plugins"))
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="kbfleet-bench-", dir="/var/tmp")  # a worker refuses --work under /tmp
    procs = []
    try:
        b = start([f"{a.bin}/kbfleet-broker", "--bind", "tcp://127.0.0.1:*", "--events", "tcp://127.0.0.1:*",
                   "--metrics", "", "--data", f"{tmp}/data", "--log-level", "warn"], f"{tmp}/broker.log")
        procs.append(b)
        ep = read_keys(b, {"bind", "events"}, time.time() + 10)
        for i in range(a.workers):
            procs.append(start([f"{a.bin}/kbfleet-worker", "--broker", ep["bind"], "--plugins", a.plugins,
                                "--slots", str(a.slots), "--work", f"{tmp}/work{i}", "--log-level", "warn"],
                               f"{tmp}/worker{i}.log"))
        ctx = zmq.Context()
        d = ctx.socket(zmq.DEALER); d.linger = 0; d.connect(ep["bind"])
        sub = ctx.socket(zmq.SUB); sub.linger = 0; sub.connect(ep["events"]); sub.subscribe(b"task.")
        def call(t, body):
            d.send_multipart([b"KBF/1", t, msgpack.packb(body)])
            if not d.poll(5000):
                sys.exit("no answer from the broker")
            return d.recv_multipart()
        deadline = time.time() + 20
        while time.time() < deadline:
            f = call(b"workers", {"req": 1})
            if len(msgpack.unpackb(f[2])["workers"]) >= a.workers:
                break
        # Let the subscription reach the broker before the first event we must see.
        call(b"info", {"req": 2}); time.sleep(0.2)
        submitted = {}
        t0 = time.time()
        for i in range(a.tasks):
            d.send_multipart([b"KBF/1", b"submit", msgpack.packb(
                {"req": 100 + i, "plugin": "hello", "handler": "greet", "input": {"name": f"b{i}"}})])
        acks = 0
        done = {}
        while len(done) < a.tasks and time.time() < t0 + 600:
            for s in zmq.select([d, sub], [], [], 1.0)[0]:
                if s is d:
                    f = d.recv_multipart()
                    body = msgpack.unpackb(f[2])
                    if f[1] == b"submitted":
                        submitted[body["task_id"]] = time.time(); acks += 1
                    elif f[1] == b"error":
                        sys.exit(f"submit refused: {body}")
                else:
                    f = sub.recv_multipart()
                    ev = msgpack.unpackb(f[3])
                    if ev["type"] == "done":
                        done[ev["task_id"]] = (time.time(), ev["data"]["state"])
        elapsed = time.time() - t0
        ok = sum(1 for _, st in done.values() if st == "succeeded")
        lat = sorted(done[t][0] - submitted[t] for t in done if t in submitted)
        pct = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] * 1000 if lat else float("nan")
        print(f"tasks={a.tasks} workers={a.workers} slots={a.slots} succeeded={ok} "
              f"elapsed_s={elapsed:.2f} tasks_per_s={len(done) / elapsed:.1f} "
              f"latency_ms_p50={pct(0.5):.1f} p99={pct(0.99):.1f}")
        return 0 if ok == a.tasks else 1
    finally:
        for p in procs:
            p.kill(); p.wait()
        shutil.rmtree(tmp, ignore_errors=True)

if __name__ == "__main__":
    sys.exit(main())
