"""The prediction log's CPU per request, in process: the model server's ASGI app called directly (no
HTTP, no wrk), one-row V2 JSON requests, 16 at a time; CPU time of the whole process (the event loop
and the log's drain thread) until every record is written, per request. Less sensitive to a shared
machine than wrk's requests/s; run two source trees back to back to compare them:

    PYTHONPATH=<tree>/serving/src .venv/bin/python bench/serving/predlog_overhead.py <label> <off|stdout> \
        [--fresh-scope]

The sink is JSON lines to /dev/null; the policy is predlog_bench.py's (keep 2, pseudonymise 2, drop
the other 10). Needs the churn v1 bundle at $BUNDLE (default /tmp/ab/models/v1).

`--fresh-scope`: each request gets its own scope and headers list (new tuples and bytes, the three
headers wrk sends), as uvicorn makes them; without it every request shares one scope, so the log
holding a request's headers holds nothing new and costs nothing here (unlike over HTTP). The same
constant cost is added to every mode; compare modes and trees with the same flag.

`--instructions N`: instructions a request instead of CPU time, counted by valgrind's callgrind
(deterministic: immune to the other load and to the machine's drifting speed, which moves CPU times
by up to 20% between runs here), over N requests after 1,024 of warm-up; about 5 minutes for N =
8,192. Under valgrind the app runs ~50 times slower, so the drain thread's 0.1 s wait is stretched
100 times, to keep batches as large as at 10,000 requests/s. Use thousands: a small N spreads fixed
costs over few requests (log on: 240,847 instructions a request at N = 1,000, 189,056 at 8,192):

    BUNDLE=<churn v1> .venv/bin/python bench/serving/predlog_overhead.py main stdout --fresh-scope \
        --instructions 8192
"""

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from typing import Any

import uvloop

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("label", help="printed with the result (e.g. the tree's name)")
parser.add_argument("mode", choices=["off", "stdout"], help="the log off, or on (JSON lines to /dev/null)")
parser.add_argument("--fresh-scope", action="store_true", help="a new scope and headers list a request")
parser.add_argument("--instructions", type=int, metavar="N", help="instructions over N requests (valgrind)")
parser.add_argument("--counted", action="store_true", help=argparse.SUPPRESS)  # the run under valgrind
args = parser.parse_args()
label, mode = args.label, args.mode
WARM_UP = 1024
if args.instructions and not args.counted:
    import subprocess

    out = os.path.join(tempfile.mkdtemp(prefix="callgrind-"), "callgrind.out")
    valgrind = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
    subprocess.run(
        [*valgrind, sys.executable, *sys.argv, "--counted"],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    with open(f"{out}.2") as dump:  # part 2: from the end of the warm-up to the end of the N requests
        total = next(int(line.split()[1]) for line in dump if line.startswith("summary:"))
    n = args.instructions
    print(f"{label} {mode}: {total / n:,.0f} instructions per request ({n} requests)")
    sys.exit(0)
if mode != "off":
    key = os.path.join(tempfile.mkdtemp(), "hmac.key")
    with open(key, "w") as fh:
        fh.write("bench-key-0123456789abcdef")
    os.environ.update(
        {
            "MODELDEPLOY_PREDLOG_ENABLED": "true",
            "MODELDEPLOY_PREDLOG_SINK": "stdout",
            "MODELDEPLOY_PREDLOG_HMAC_KEY_FILE": key,
            "MODELDEPLOY_PREDLOG_KEEP": "number_of_projects,number_of_issues",
            "MODELDEPLOY_PREDLOG_PSEUDONYMISE": "at_mentions,issues_viewed",
            "MODELDEPLOY_PREDLOG_DEPLOYMENT": "churn",
            "MODELDEPLOY_PREDLOG_CAPACITY": "1000000",
        }
    )
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (the sink, for the whole run)

from modeldeploy_contract.server_settings import ServerSettings  # noqa: E402
from modeldeploy_serving.app import Message, create_app  # noqa: E402

ROW = [2, 35, 1, 4, 6, 20, 8, 17, 5, 107, 9, 6.5, 2, 1]
BODY = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 14], "data": ROW}]}).encode()


async def main() -> None:
    bundle = os.environ.get("BUNDLE", "/tmp/ab/models/v1")  # noqa: S108
    app = create_app(ServerSettings(model_uri=bundle, log_level="warning"))
    await app.dataplane.start()
    while app.dataplane.state != "ready":
        await asyncio.sleep(0.05)
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v2/models/churn/infer",
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())],
    }
    message = {"type": "http.request", "body": BODY, "more_body": False}

    async def receive() -> Message:
        return message

    async def send(_m: Message) -> None:
        pass

    wire = [
        (b"Host", b"127.0.0.1:8080"),
        (b"Content-Type", b"application/json"),
        (b"Content-Length", b"%d" % len(BODY)),
    ]

    def fresh() -> dict[str, object]:
        # uvicorn's httptools protocol: a new dict and list a request, each header (name.lower(), value)
        return {**scope, "headers": [(k.lower(), bytes(bytearray(v))) for k, v in wire]}

    async def client(n: int) -> None:
        if args.fresh_scope:
            for _ in range(n):
                await app(fresh(), receive, send)
        else:
            for _ in range(n):
                await app(scope, receive, send)

    plog = app.plog

    async def requests(n: int) -> None:
        """n requests from 16 concurrent clients, then until the log has written each one's record
        (so the drain thread's CPU is counted too)."""
        written = plog.written if plog else 0
        await asyncio.gather(*(client(n // 16 + (i < n % 16)) for i in range(16)))
        while plog is not None and plog.written < written + n:
            await asyncio.sleep(0.002)

    if args.counted:
        await counted(plog, requests, args.instructions)
        os._exit(0)
    n, best = 20_000, []
    for _ in range(5):
        t = time.process_time()
        await requests(n)
        best.append((time.process_time() - t) / n * 1e6)
    print(f"{label} {mode}: {min(best):.1f} us CPU per request (best of 5 x {n})", file=sys.__stdout__)
    os._exit(0)


async def counted(plog: Any, requests: Any, n: int) -> None:
    """Under callgrind: warm up, dump the counters (part 1), run n requests until every record is
    written, dump again (part 2: what the parent reads)."""
    import subprocess
    import threading

    if plog is not None:

        class Slow(threading.Event):
            def wait(self, timeout: float | None = None) -> bool:
                return super().wait(None if timeout is None else timeout * 100)

        plog._wake = Slow()  # the drain thread waits on it from its next wait on
    for count in (WARM_UP, n):
        await requests(count)
        subprocess.run(["callgrind_control", "-d", str(os.getpid())], check=True, capture_output=True)


uvloop.run(main())
