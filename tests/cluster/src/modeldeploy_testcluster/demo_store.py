"""`python -m modeldeploy_testcluster.demo_store DIR`: serve DIR over HTTP on the pod network's host
address, as a model store the process-backed pods can reach, and print its base URL.

The server is recorded with the cluster's processes, so `modeldeploy-cluster down` stops it too.
Starting it again for the same folder reuses the running one.
"""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

from modeldeploy_testcluster import daemons
from modeldeploy_testcluster.layout import default_layout

PORT = 8099


def main() -> int:
    folder = Path(sys.argv[1]).resolve()
    layout = default_layout()
    records = daemons.load(layout.processes_file)
    url = f"http://{layout.host_ip}:{PORT}"
    marker = layout.state_dir / "demo-store.json"
    running = [r for r in records if r.name == "demo-store" and daemons.is_alive(r)]
    if running and marker.exists() and json.loads(marker.read_text()).get("folder") == str(folder):
        print(url)
        return 0
    for record in running:
        daemons.stop(record)
    records = [r for r in records if r.name != "demo-store"]
    record = daemons.spawn(
        "demo-store",
        [
            sys.executable,
            "-m",
            "http.server",
            str(PORT),
            "--bind",
            layout.host_ip,
            "--directory",
            str(folder),
        ],
        layout.logs_dir / "demo-store.log",
    )
    daemons.save(layout.processes_file, [*records, record])
    marker.write_text(json.dumps({"folder": str(folder)}))
    for _ in range(100):
        with socket.socket() as probe:
            if probe.connect_ex((layout.host_ip, PORT)) == 0:
                break
        daemons.is_alive(record) or sys.exit("the demo model store exited; see " + str(layout.logs_dir))
        import time

        time.sleep(0.05)
    print(url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
