#!/usr/bin/python3
"""Artifacts (issue #6, scenario 6): upload and fetch of one large artifact against `cp`.

Usage: bench/artifacts.py --bin build-release/bin [--mib 1024] [--durability none|batch|fsync] [--fetch-fsync]
Starts a broker (--durability none) and one worker on loopback with a plugin whose handler writes
--mib MiB to out/blob.bin (the workspace is a tmpfs). Prints one JSON object:
- upload: from the handler's end (`started` event + outcome wall_ms) to the broker's `artifact`
  event, i.e. the worker's SHA-256 pass over the file plus the chunked upload into the CAS;
- fetch: `kbfleet artifacts get` into a file next to the CAS (it re-hashes what it received);
- cp: `cp` of the stored blob to another file on the same disk, the baseline for both;
- cp_fsync: the same `cp` followed by an fsync of the copy: the disk's durable write speed, what
  an upload with --durability batch|fsync (blob fsynced before its rename) or a fetch with
  --fetch-fsync (`kbfleet artifacts get --fsync`) can reach at best;
- the broker's VmRSS before and its maximum during upload and fetch, sampled every 20 ms.
"""
import argparse, json, os, shutil, subprocess, sys, tempfile, threading, time

MANIFEST = """# bench/artifacts.py: one large artifact
id: benchblob
version: 1.0.0
handlers:
  make: {{ exec: bin/make.sh }}
permissions:
  fs: {{ write: ["out/**"] }}
  quotas: {{ timeoutMs: 600000, cpuMs: 600000, diskMb: {disk}, memoryMb: {mem} }}
artifacts:
  - {{ id: blob, path: out/blob.bin }}
"""
SCRIPT = "#!/bin/sh\nset -eu\nhead -c {bytes} /dev/zero >\"$KBFLEET_OUT/blob.bin\"\n"


def rss(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


class Sampler(threading.Thread):
    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid, self.max, self.stop = pid, 0, False

    def run(self):
        while not self.stop:
            self.max = max(self.max, rss(self.pid))
            time.sleep(0.02)


def start(argv, log, keys):
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=open(log, "a"), text=True)
    found = {}
    deadline = time.time() + 15
    while time.time() < deadline and len(found) < len(keys):
        line = p.stdout.readline()
        if not line:
            break
        k, _, v = line.strip().partition("=")
        if k in keys:
            found[k] = v
    if len(found) < len(keys):
        p.kill()
        sys.exit(f"{argv[0]} did not start; see {log}")
    return p, found


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--mib", type=int, default=1024)
    ap.add_argument("--durability", default="none", choices=["none", "batch", "fsync"])
    ap.add_argument("--fetch-fsync", action="store_true")
    a = ap.parse_args()
    size = a.mib << 20
    scratch = tempfile.mkdtemp(prefix="kbfleet-artifacts-bench-", dir="/var/tmp")
    os.chmod(scratch, 0o755)
    log = os.path.join(scratch, "log.txt")
    procs = []
    try:
        plugin = os.path.join(scratch, "plugins", "benchblob")
        os.makedirs(os.path.join(plugin, "bin"))
        with open(os.path.join(plugin, "kbfleet.yaml"), "w") as f:
            f.write(MANIFEST.format(disk=a.mib + 64, mem=a.mib + 256))
        script = os.path.join(plugin, "bin", "make.sh")
        with open(script, "w") as f:
            f.write(SCRIPT.format(bytes=size))
        os.chmod(script, 0o755)
        broker, ep = start([os.path.join(a.bin, "kbfleet-broker"), "--bind", "tcp://127.0.0.1:*", "--events",
                            "tcp://127.0.0.1:*", "--metrics", "", "--data", os.path.join(scratch, "data"),
                            "--durability", a.durability, "--log-level", "warn"], log, {"bind", "events"})
        procs.append(broker)
        worker, _ = start([os.path.join(a.bin, "kbfleet-worker"), "--broker", ep["bind"], "--plugins",
                           os.path.join(scratch, "plugins"), "--work", os.path.join(scratch, "work"), "--slots", "1",
                           "--metrics", "", "--log-level", "warn"], log, {"metrics"})
        procs.append(worker)
        cli = [os.path.join(a.bin, "kbfleet"), "--broker", ep["bind"]]

        def kb(*args, check=True):
            return subprocess.run(cli + list(args), capture_output=True, text=True, check=check, timeout=900)

        deadline = time.time() + 20
        while time.time() < deadline and "benchblob" not in kb("workers", "--json", check=False).stdout:
            time.sleep(0.1)  # waits for the worker to register; not part of any measurement
        rss_before = rss(broker.pid)
        sampler = Sampler(broker.pid)
        sampler.start()
        task = kb("submit", "benchblob", "make").stdout.strip()
        kb("status", task, "--json")
        while json.loads(kb("status", task, "--json").stdout)["state"] in ("queued", "running", "retrying"):
            time.sleep(0.1)
        st = json.loads(kb("status", task, "--json").stdout)
        if st["state"] != "succeeded" or not st["outcome"].get("artifacts"):
            sys.exit(f"the task did not produce its artifact: {json.dumps(st)[:800]}")
        events = [json.loads(line) for line in kb("tail", task, "--json").stdout.splitlines() if line.strip()]
        started = next(e["ts_ms"] for e in events if e["type"] == "started")
        stored = next(e["ts_ms"] for e in events if e["type"] == "artifact")
        upload_s = (stored - (started + st["outcome"]["wall_ms"])) / 1000.0
        rss_upload = sampler.max
        fetched = os.path.join(scratch, "fetched.bin")
        t0 = time.perf_counter()
        kb("artifacts", "get", task, "blob", "-o", fetched, *(["--fsync"] if a.fetch_fsync else []))
        fetch_s = time.perf_counter() - t0
        sampler.stop = True
        sampler.join()
        blob = None
        for root, _, files in os.walk(os.path.join(scratch, "data", "cas")):
            for name in files:
                if os.path.getsize(os.path.join(root, name)) == size:
                    blob = os.path.join(root, name)
        if blob is None or os.path.getsize(fetched) != size:
            sys.exit("the stored or fetched blob has the wrong size")
        copy = os.path.join(scratch, "copy.bin")
        t0 = time.perf_counter()
        subprocess.run(["cp", blob, copy], check=True)
        cp_s = time.perf_counter() - t0
        os.unlink(copy)
        t0 = time.perf_counter()
        subprocess.run(["cp", blob, copy], check=True)
        fd = os.open(copy, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
        cp_fsync_s = time.perf_counter() - t0
        mb = size / 1e6
        print(json.dumps({"bytes": size, "upload_s": upload_s, "fetch_s": fetch_s, "cp_s": cp_s,
                          "upload_mb_s": mb / upload_s if upload_s > 0 else None, "fetch_mb_s": mb / fetch_s,
                          "cp_mb_s": mb / cp_s, "cp_fsync_mb_s": mb / cp_fsync_s, "durability": a.durability,
                          "fetch_fsync": a.fetch_fsync, "broker_rss_before": rss_before, "broker_rss_max_upload": rss_upload,
                          "broker_rss_max": sampler.max, "handler_wall_ms": st["outcome"]["wall_ms"]}))
    finally:
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
