#!/usr/bin/python3
"""An interop client for kbfleet written only from docs/protocol.md.

Starts a real broker and one worker, then speaks protocol version 1 directly with pyzmq and
msgpack: info, workers, submit, status, events (replay) plus live events on the XPUB endpoint,
an unknown plugin, and a malformed body. Exits 0 on success and 1 with a message on failure.

Run with the Debian interpreter, which has python3-zmq and python3-msgpack:
  /usr/bin/python3 python_client.py --broker-bin B --worker-bin W --plugins examples/plugins
"""

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import msgpack
import zmq

TAG = b"KBF/1"
STEP_TIMEOUT_S = 15.0  # bounds every single wait; the whole run is bounded by CTest's 60 s
QUIET_S = 1.0  # docs/protocol.md: "If the stream is quiet for a second, ask `events` again."


class Failure(Exception):
    """A check failed; the message says what was expected and what arrived."""


def check(cond, message):
    if not cond:
        raise Failure(message)


class Deadline:
    def __init__(self, seconds, what):
        self.end = time.monotonic() + seconds
        self.what = what

    def remaining_ms(self):
        left = self.end - time.monotonic()
        if left <= 0:
            raise Failure("timed out waiting for " + self.what)
        return max(1, int(left * 1000))


# ---- processes ---------------------------------------------------------------------------------


class Proc:
    """A child process whose stdout lines are collected by a thread (so the pipe never fills)."""

    def __init__(self, name, argv, log_dir):
        self.name = name
        self.argv = argv
        self.stderr_path = os.path.join(log_dir, name + ".stderr")
        self.lines = []
        self.cond = threading.Condition()
        self.stderr_file = open(self.stderr_path, "wb")
        self.popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                      stderr=self.stderr_file, start_new_session=True)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for raw in self.popen.stdout:
            with self.cond:
                self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
                self.cond.notify_all()
        with self.cond:
            self.cond.notify_all()

    def wait_for_keys(self, keys, seconds):
        """Waits until stdout has printed a `key=value` line for every key; returns the values."""
        deadline = Deadline(seconds, "%s to print %s on stdout" % (self.name, ", ".join(keys)))
        with self.cond:
            while True:
                found = {}
                for line in self.lines:
                    key, sep, value = line.partition("=")
                    if sep and key.strip() in keys and key.strip() not in found:
                        found[key.strip()] = value.strip()
                if len(found) == len(keys):
                    return found
                self.assert_running()
                self.cond.wait(timeout=min(0.2, deadline.remaining_ms() / 1000.0))

    def assert_running(self):
        code = self.popen.poll()
        check(code is None, "%s exited early with status %s" % (self.name, code))

    def stop(self):
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.popen.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.popen.wait(timeout=5)
        self.reader.join(timeout=2)
        self.popen.stdout.close()
        self.stderr_file.close()

    def tail(self, n=25):
        try:
            with open(self.stderr_path, "rb") as f:
                err = f.read().decode("utf-8", "replace").splitlines()[-n:]
        except OSError:
            err = []
        with self.cond:
            out = self.lines[-n:]
        return "---- %s stdout (last %d) ----\n%s\n---- %s stderr (last %d) ----\n%s" % (
            self.name, n, "\n".join(out), self.name, n, "\n".join(err))


# ---- protocol ----------------------------------------------------------------------------------


def pack(value):
    return msgpack.packb(value, use_bin_type=True)


def unpack(data):
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


class Client:
    """A DEALER on the broker's ROUTER endpoint; replies are matched on `req`."""

    def __init__(self, ctx, endpoint):
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(endpoint)
        self.next_req = 1

    def close(self):
        self.sock.close(linger=0)

    def send_raw(self, frames):
        self.sock.send_multipart(frames)

    def recv(self, deadline):
        """One reply as (type, body, data frames)."""
        if not self.sock.poll(deadline.remaining_ms(), zmq.POLLIN):
            deadline.remaining_ms()  # raises when the deadline has passed
            return None
        frames = self.sock.recv_multipart()
        check(len(frames) >= 3, "a reply has fewer than 3 frames: %r" % (frames,))
        check(frames[0] == TAG, "reply frame 0 is %r, expected %r" % (frames[0], TAG))
        body = unpack(frames[2])
        check(isinstance(body, dict), "reply body is not a map: %r" % (body,))
        return frames[1].decode("ascii"), body, frames[3:]

    def request(self, kind, body=None, seconds=STEP_TIMEOUT_S):
        """Sends a request and returns (reply type, body, data frames) of the reply with its req."""
        req = self.next_req
        self.next_req += 1
        payload = dict(body or {})
        payload["req"] = req
        self.send_raw([TAG, kind.encode("ascii"), pack(payload)])
        deadline = Deadline(seconds, "the reply to %s (req %d)" % (kind, req))
        while True:
            got = self.recv(deadline)
            if got is None:
                continue
            if got[1].get("req") == req:
                return got
            # A late reply to an earlier request: the document says to ignore it.

    def call(self, kind, body=None, expect=None):
        """A request that must succeed; returns the reply body."""
        rtype, rbody, _ = self.request(kind, body)
        expect = expect or kind
        check(rtype == expect, "%s: expected a %r reply, got %r %r" % (kind, expect, rtype, rbody))
        return rbody


def wait_for_plugin(client, plugin, procs):
    deadline = Deadline(STEP_TIMEOUT_S, "a worker offering plugin %r" % plugin)
    while True:
        for p in procs:
            p.assert_running()
        workers = client.call("workers")["workers"]
        for w in workers:
            for offer in w.get("plugins", []):
                if offer.get("id") == plugin and not offer.get("error"):
                    return w
        # Deadline-bounded poll: wait a little on the socket (nothing arrives) before asking again.
        client.sock.poll(min(100, deadline.remaining_ms()), zmq.POLLIN)


class EventCollector:
    """The replay + live algorithm of docs/protocol.md, "Events"."""

    def __init__(self, client, sub, task_id):
        self.client = client
        self.sub = sub
        self.task_id = task_id
        self.events = []  # in seq order, each exactly once
        self.expected = 1
        self.done = False
        self.replays = 0
        self.live_accepted = 0

    def accept(self, event):
        check(event.get("task_id") == self.task_id,
              "event for task %r on the topic of %r" % (event.get("task_id"), self.task_id))
        seq = event.get("seq")
        check(isinstance(seq, int), "event seq is not an integer: %r" % (event,))
        if seq != self.expected:
            return False
        self.events.append(event)
        self.expected += 1
        if event.get("type") == "done":
            self.done = True
        return True

    def replay(self):
        """Fetches the backlog from the next expected seq until the broker has no more."""
        self.replays += 1
        while not self.done:
            body = self.client.call("events", {"task_id": self.task_id, "from_seq": self.expected})
            check(body.get("task_id") == self.task_id, "events reply for another task: %r" % (body,))
            check(body.get("first_seq", 1) <= self.expected,
                  "the backlog was trimmed (first_seq %r > %d); events were lost"
                  % (body.get("first_seq"), self.expected))
            for event in body.get("events", []):
                self.accept(event)
            next_seq, last_seq = body.get("next_seq"), body.get("last_seq")
            check(isinstance(next_seq, int) and isinstance(last_seq, int),
                  "events reply lacks next_seq/last_seq: %r" % (body,))
            if next_seq > last_seq:
                return

    def run(self, seconds):
        deadline = Deadline(seconds, "the done event of task %s" % self.task_id)
        self.replay()  # subscribed already: now fetch the backlog from seq 1
        while not self.done:
            wait_ms = min(int(QUIET_S * 1000), deadline.remaining_ms())
            if not self.sub.poll(wait_ms, zmq.POLLIN):
                self.replay()  # quiet for a second
                continue
            frames = self.sub.recv_multipart()
            check(len(frames) == 4, "an event has %d frames, expected 4: %r" % (len(frames), frames))
            topic, tag, kind, raw = frames
            check(topic == ("task." + self.task_id).encode(), "unexpected topic %r" % topic)
            check(tag == TAG, "event frame 1 is %r, expected %r" % (tag, TAG))
            check(kind == b"event", "event frame 2 is %r, expected b'event'" % kind)
            event = unpack(raw)
            check(isinstance(event, dict), "event body is not a map: %r" % (event,))
            seq = event.get("seq")
            if isinstance(seq, int) and seq < self.expected:
                continue  # already seen through the replay
            if isinstance(seq, int) and seq > self.expected:
                self.replay()  # a gap: fetch it, then this event is seen through the replay
                continue
            if self.accept(event):
                self.live_accepted += 1
        return self.events


# ---- the scenario ------------------------------------------------------------------------------


def scenario(args, tmp, procs):
    ctx = zmq.Context.instance()
    data_dir = os.path.join(tmp, "data")
    work_dir = os.path.join(tmp, "work")
    os.makedirs(data_dir)
    os.makedirs(work_dir)

    broker = Proc("broker", [args.broker_bin, "--bind", "tcp://127.0.0.1:*", "--events",
                             "tcp://127.0.0.1:*", "--metrics", "127.0.0.1:0", "--data", data_dir],
                  tmp)
    procs.append(broker)
    endpoints = broker.wait_for_keys(["bind", "events", "metrics"], STEP_TIMEOUT_S)
    bind = endpoints["bind"]
    check(bind.startswith("tcp://127.0.0.1:"), "broker printed bind=%r" % bind)

    worker = Proc("worker", [args.worker_bin, "--broker", bind, "--plugins", args.plugins,
                             "--slots", "2", "--work", work_dir, "--metrics", "127.0.0.1:0"], tmp)
    procs.append(worker)

    client = Client(ctx, bind)
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    try:
        # info: protocol 1 and the events endpoint.
        info = client.call("info")
        check(info.get("protocol") == 1, "info.protocol is %r, expected 1" % info.get("protocol"))
        events_endpoint = info.get("events_endpoint")
        check(isinstance(events_endpoint, str) and events_endpoint.startswith("tcp://"),
              "info.events_endpoint is %r" % (events_endpoint,))
        print("info: version=%s events_endpoint=%s" % (info.get("version"), events_endpoint))

        w = wait_for_plugin(client, "hello", procs)
        print("worker %s offers hello (slots=%s free=%s)" % (w.get("worker_id"), w.get("slots"),
                                                             w.get("free")))

        # submit, then subscribe: the early events are only reachable through the replay.
        submitted = client.call("submit", {"plugin": "hello", "handler": "greet",
                                           "input": {"name": "python"}}, expect="submitted")
        task_id = submitted.get("task_id")
        check(isinstance(task_id, str) and len(task_id) == 32
              and all(c in "0123456789abcdef" for c in task_id),
              "submitted.task_id is not 32 lowercase hex characters: %r" % (task_id,))
        check(submitted.get("existing") is False, "submitted.existing is %r, expected False"
              % (submitted.get("existing"),))
        sub.connect(events_endpoint)
        sub.setsockopt(zmq.SUBSCRIBE, ("task." + task_id).encode())

        collector = EventCollector(client, sub, task_id)
        events = collector.run(STEP_TIMEOUT_S * 2)
        print("collected %d events: %d live, %d replay rounds" % (len(events), collector.live_accepted,
                                                                  collector.replays))
        seqs = [e["seq"] for e in events]
        check(seqs == list(range(1, len(events) + 1)), "event seqs are not 1..N: %r" % seqs)
        types = [e.get("type") for e in events]
        print("events: %s" % " ".join("%d:%s" % (s, t) for s, t in zip(seqs, types)))
        check(types[0] == "started", "the first event is %r, expected 'started'" % types[0])
        check(types[-1] == "done" and types.count("done") == 1,
              "'done' must be the last and only done event: %r" % types)
        texts = [e.get("data", {}).get("text", "") for e in events if e.get("type") == "output"]
        check(any("hello, python" in t for t in texts),
              "no output line contains 'hello, python': %r" % texts)
        for e in events:
            check(isinstance(e.get("data"), dict), "event %d data is not a map: %r"
                  % (e["seq"], e.get("data")))
            check(e.get("plugin") == "hello", "event %d plugin is %r" % (e["seq"], e.get("plugin")))
        done = events[-1]["data"]
        check(done.get("state") == "succeeded", "done.state is %r (outcome %r)"
              % (done.get("state"), done))

        status = client.call("status", {"task_id": task_id})
        task = status.get("task", {})
        check(task.get("task_id") == task_id, "status.task.task_id is %r" % task.get("task_id"))
        check(task.get("state") == "succeeded", "status.task.state is %r" % task.get("state"))
        check(task.get("events") == len(events), "status.task.events is %r, collected %d"
              % (task.get("events"), len(events)))

        # An unknown plugin is refused with PLUGIN_NOT_FOUND.
        rtype, body, _ = client.request("submit", {"plugin": "no-such-plugin", "handler": "greet",
                                                   "input": {}})
        check(rtype == "error" and body.get("code") == "PLUGIN_NOT_FOUND",
              "submit of an unknown plugin: expected error PLUGIN_NOT_FOUND, got %r %r"
              % (rtype, body))

        # A malformed body (0xc1 is never valid msgpack) gets PROTOCOL_ERROR; the broker lives on.
        client.send_raw([TAG, b"info", b"\xc1"])
        deadline = Deadline(STEP_TIMEOUT_S, "the error reply to a malformed body")
        while True:
            got = client.recv(deadline)
            if got is not None and got[0] == "error":
                break
        check(got[1].get("code") == "PROTOCOL_ERROR",
              "malformed body: expected error PROTOCOL_ERROR, got %r" % (got[1],))
        info = client.call("info")
        check(info.get("protocol") == 1, "info after a malformed body: %r" % (info,))
        broker.assert_running()
        worker.assert_running()
    finally:
        sub.close(linger=0)
        client.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--broker-bin", required=True)
    parser.add_argument("--worker-bin", required=True)
    parser.add_argument("--plugins", required=True)
    args = parser.parse_args()

    tmp = tempfile.mkdtemp(prefix="kbfleet-pyclient-", dir="/var/tmp")  # a worker refuses --work under /tmp
    procs = []
    try:
        scenario(args, tmp, procs)
    except Exception as e:  # a Failure, or a reply that broke an assumption (KeyError, ...)
        kind = "" if isinstance(e, Failure) else "%s: " % type(e).__name__
        print("FAIL: %s%s" % (kind, e), file=sys.stderr)
        for p in procs:
            print(p.tail(), file=sys.stderr)
        return 1
    finally:
        for p in reversed(procs):  # worker first, then broker
            p.stop()
        zmq.Context.instance().term()
        shutil.rmtree(tmp, ignore_errors=True)
    print("PASS: python interop client")
    return 0


if __name__ == "__main__":
    sys.exit(main())
