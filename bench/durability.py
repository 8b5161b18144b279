#!/usr/bin/python3
"""The cost of the journal: submit throughput and submit->ack latency per --durability mode.

Usage: bench/durability.py [--tasks 20000] [--latency-tasks 2000] [--rounds 3] [--window 256]
                           [--modes none,batch,fsync] [--bin build/bin] [--data-root DIR]
For each round and each mode (interleaved, so every mode sees the same machine load) a fresh
broker with a fresh --data is started without workers, so submissions are queued and what is
measured is the broker's accept path: decode, validate, queue, journal, acknowledge.
- throughput: --tasks submissions pipelined over one DEALER with --window in flight; acks/s.
- latency: --latency-tasks submissions one at a time; p50/p99 of submit -> `submitted`.
Prints one line per mode (median over rounds) and the ratios to `none`.
"""
import argparse, os, shutil, statistics, subprocess, sys, tempfile, time
import msgpack, zmq


def start_broker(binary, mode, data, log):
    p = subprocess.Popen([binary, "--bind", "tcp://127.0.0.1:*", "--events", "tcp://127.0.0.1:*", "--metrics", "",
                          "--data", data, "--durability", mode, "--log-level", "warn"],
                         stdout=subprocess.PIPE, stderr=open(log, "w"), text=True)
    deadline = time.time() + 10
    while time.time() < deadline:
        line = p.stdout.readline()
        if line.startswith("bind="):
            return p, line.strip().partition("=")[2]
    p.kill()
    sys.exit(f"broker did not start; see {log}")


def submit_body(req, i):
    return msgpack.packb({"req": req, "plugin": "noop", "handler": "ok", "idempotency_key": f"bench-{i}"})


def throughput(ep, n, window):
    ctx = zmq.Context.instance()
    d = ctx.socket(zmq.DEALER); d.linger = 0; d.connect(ep)
    sent = acked = 0
    t0 = time.perf_counter()
    while acked < n:
        while sent < n and sent - acked < window:
            d.send_multipart([b"KBF/1", b"submit", submit_body(sent + 1, sent)])
            sent += 1
        if not d.poll(10000):
            sys.exit("no answer from the broker within 10 s")
        while True:
            try:
                f = d.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            if f[1] != b"submitted":
                sys.exit(f"submit refused: {msgpack.unpackb(f[2])}")
            acked += 1
    elapsed = time.perf_counter() - t0
    d.close()
    return n / elapsed


def latency(ep, n, offset):
    ctx = zmq.Context.instance()
    d = ctx.socket(zmq.DEALER); d.linger = 0; d.connect(ep)
    lat = []
    for i in range(n):
        body = submit_body(i + 1, offset + i)
        t0 = time.perf_counter()
        d.send_multipart([b"KBF/1", b"submit", body])
        if not d.poll(10000):
            sys.exit("no answer from the broker within 10 s")
        f = d.recv_multipart()
        lat.append(time.perf_counter() - t0)
        if f[1] != b"submitted":
            sys.exit(f"submit refused: {msgpack.unpackb(f[2])}")
    d.close()
    lat.sort()
    return lat[len(lat) // 2] * 1e6, lat[min(len(lat) - 1, int(0.99 * len(lat)))] * 1e6


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", type=int, default=20000)
    ap.add_argument("--latency-tasks", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--window", type=int, default=256)
    ap.add_argument("--modes", default="none,batch,fsync")
    ap.add_argument("--bin", default=os.path.join(os.path.dirname(__file__), "..", "build", "bin"))
    ap.add_argument("--data-root", default=None, help="where the brokers' --data dirs go (default: a temp dir)")
    a = ap.parse_args()
    modes = a.modes.split(",")
    root = tempfile.mkdtemp(prefix="kbfleet-durability-", dir=a.data_root)
    results = {m: {"tps": [], "p50": [], "p99": []} for m in modes}
    try:
        for r in range(a.rounds):
            for m in modes:
                data = os.path.join(root, f"{m}-{r}")
                p, ep = start_broker(os.path.join(a.bin, "kbfleet-broker"), m, data, os.path.join(root, f"{m}-{r}.log"))
                try:
                    results[m]["tps"].append(throughput(ep, a.tasks, a.window))
                    p50, p99 = latency(ep, a.latency_tasks, a.tasks)
                    results[m]["p50"].append(p50)
                    results[m]["p99"].append(p99)
                finally:
                    p.kill(); p.wait()
                shutil.rmtree(data, ignore_errors=True)
        med = {m: {k: statistics.median(v) for k, v in results[m].items()} for m in modes}
        print(f"submit path, no workers; tasks={a.tasks} window={a.window} latency_tasks={a.latency_tasks} "
              f"rounds={a.rounds} (median of rounds)")
        for m in modes:
            x = med[m]
            line = f"durability={m:5s} submits_per_s={x['tps']:9.0f} ack_p50_us={x['p50']:7.0f} ack_p99_us={x['p99']:7.0f}"
            if "none" in med and m != "none":
                line += (f"  vs none: throughput x{x['tps'] / med['none']['tps']:.2f}"
                         f", p50 x{x['p50'] / med['none']['p50']:.2f} (+{x['p50'] - med['none']['p50']:.0f} us)")
            print(line)
        return 0
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
