"""A short, bounded run of the coverage-guided decoder fuzzer (tests/fuzz/fuzz_decoders.py).

`make fuzz` runs it for minutes; here a fixed number of inputs (a few seconds) in a subprocess, so
that a decoder change that lets an exception other than BadRequestError escape fails the suite.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

FUZZER = Path(__file__).resolve().parents[2] / "fuzz" / "fuzz_decoders.py"


def test_decoder_fuzzer_finds_nothing_in_a_bounded_run(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    result = subprocess.run(
        [
            sys.executable,
            str(FUZZER),
            "-runs=20000",
            "-max_total_time=20",
            f"-dict={FUZZER.parent / 'decoders.dict'}",
            f"-artifact_prefix={tmp_path}/",
            "-seed=1",
            str(corpus),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    crashes = list(tmp_path.glob("crash-*"))
    assert result.returncode == 0, (crashes, result.stderr[-3000:])
    assert not crashes
