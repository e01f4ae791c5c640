"""Read training and validation tables (CSV, or Parquet when pyarrow is installed) as float columns."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import numpy.typing as npt

MISSING = frozenset({"", "na", "nan", "null", "none"})


class TableError(Exception):
    pass


def read_table(path: Path) -> tuple[list[str], npt.NDArray[np.float64]]:
    """Column names and an [rows, columns] float64 matrix; missing values become NaN."""
    if path.suffix.lower() in (".parquet", ".pq"):
        return _read_parquet(path)
    return _read_csv(path)


def _read_csv(path: Path) -> tuple[list[str], npt.NDArray[np.float64]]:
    with path.open(newline="") as fh:
        reader = csv.reader(fh)
        try:
            header = next(reader)
        except StopIteration:
            raise TableError(f"{path} is empty") from None
        rows = []
        for line, row in enumerate(reader, start=2):
            if len(row) != len(header):
                raise TableError(f"{path}:{line}: {len(row)} values, the header has {len(header)}")
            values = []
            for column, cell in zip(header, row, strict=True):
                text = cell.strip()
                if text.lower() in MISSING:
                    values.append(math.nan)
                    continue
                try:
                    values.append(float(text))
                except ValueError:
                    raise TableError(
                        f"{path}:{line}: column {column!r} has non-numeric value {text!r}"
                    ) from None
            rows.append(values)
    if not rows:
        raise TableError(f"{path} has no data rows")
    return header, np.asarray(rows, dtype=np.float64)


def _read_parquet(path: Path) -> tuple[list[str], npt.NDArray[np.float64]]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise TableError(
            "reading Parquet needs pyarrow (pip install 'modeldeploy-serving[parquet]')"
        ) from None
    table = pq.read_table(path)
    columns = []
    for name, column in zip(table.column_names, table.columns, strict=True):
        try:
            as_float = column.cast(pa.float64())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise TableError(f"{path}: column {name!r} of type {column.type} is not numeric") from None
        columns.append(as_float.to_numpy(zero_copy_only=False))  # nulls become NaN
    if table.num_rows == 0:
        raise TableError(f"{path} has no data rows")
    return list(table.column_names), np.column_stack(columns).astype(np.float64)
