"""`python -m modeldeploy_testcluster.processnode --state-dir DIR`: run the process node agent."""

from __future__ import annotations

import argparse
import logging
import signal
from pathlib import Path

from modeldeploy_testcluster.layout import Layout
from modeldeploy_testcluster.processnode.agent import ProcessNodeAgent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--state-dir", type=Path, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    agent = ProcessNodeAgent(Layout(state_dir=args.state_dir))
    signal.signal(signal.SIGTERM, lambda *_: agent.stop())
    signal.signal(signal.SIGINT, lambda *_: agent.stop())
    agent.run()


if __name__ == "__main__":
    main()
