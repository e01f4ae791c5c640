"""Coverage-guided fuzzing (atheris) of the V2 JSON, V2 binary-extension and V1 decoders.

    .venv/bin/python tests/fuzz/fuzz_decoders.py -max_total_time=300 [corpus dir ...]  # make fuzz
    .venv/bin/python tests/fuzz/fuzz_decoders.py -runs=3000  # the bounded run in the test suite

The property: every input either decodes to a float32 [N, 3] matrix with no infinity, or raises
BadRequestError (a named 400). Any other exception is a bug (it would be a 500) and stops the
fuzzer with the input that caused it (libFuzzer writes it to crash-<sha1>).
The seeds below are valid and nearly valid requests; the first input byte picks the decoder.
"""

from __future__ import annotations

import sys

import atheris
import numpy as np

# Only the codecs are instrumented (numpy and the rest would slow every run for no coverage gain).
with atheris.instrument_imports(include=["modeldeploy_serving.protocol", "modeldeploy_serving.rows"]):
    from modeldeploy_serving.errors import BadRequestError
    from modeldeploy_serving.protocol import tensors, v1, v2  # noqa: F401  (tensors: instrumented)

FEATURES = {"a": 0, "b": 1, "c": 2}
OUTPUTS = ["probabilities", "label"]
MAX_ROWS = 64

SEEDS = [
    b'\x00{"inputs":[{"name":"i","datatype":"FP32","shape":[1,3],"data":[1,2.5,null]}],"id":"x"}',
    b'\x00{"inputs":[{"name":"i","datatype":"INT32","shape":[2,3],"data":[[1,2,3],[4,5,6]]}]}',
    b'\x00{"inputs":[{"name":"a","datatype":"FP64","shape":[1],"data":[NaN]},'
    b'{"name":"b","datatype":"INT64","shape":[1,1],"data":[2]},{"name":"c","datatype":"FP32","shape":[1],"data":[3]}],'
    b'"outputs":[{"name":"label","parameters":{"binary_data":true}}],"parameters":{"binary_data_output":false}}',
    b'\x01{"inputs":[{"name":"i","datatype":"FP32","shape":[1,3],"parameters":{"binary_data_size":12}}]}'
    b"\x00\x00\x80?\x00\x00\x00@\x00\x00@@",
    b'\x02{"instances":[[1,2,3],[null,NaN,1]]}',
    b'\x02{"instances":[{"a":1,"c":2}]}',
]


def check(body: bytes, mode: int) -> None:
    try:
        if mode == 2:
            x = v1.decode_request(body, FEATURES, MAX_ROWS)
        else:
            header_length = None
            if mode == 1:  # binary extension: the JSON part ends at its last closing brace
                end = body.rfind(b"}")
                header_length = end + 1 if end >= 0 else len(body)
            x = v2.decode_request(body, header_length, FEATURES, OUTPUTS, MAX_ROWS).x
    except BadRequestError:
        return
    assert x.dtype == np.float32, x.dtype
    assert x.ndim == 2, x.shape
    assert x.shape[1] == 3, x.shape
    assert 0 < x.shape[0] <= MAX_ROWS, x.shape
    assert not np.isinf(x).any(), x


def test_one_input(data: bytes) -> None:
    if not data:
        return
    check(data[1:], data[0] % 3)


def main() -> None:
    import os
    import tempfile

    args = list(sys.argv)
    corpora = [a for a in args[1:] if not a.startswith("-")]
    if not corpora:  # no corpus given: a fresh one
        corpora = [tempfile.mkdtemp(prefix="fuzz-decoders-")]
        args.append(corpora[0])
    for i, seed in enumerate(SEEDS):  # the seeds always start the first corpus
        with open(os.path.join(corpora[0], f"seed-{i}"), "wb") as fh:
            fh.write(seed)
    atheris.Setup(args, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
