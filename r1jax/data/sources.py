"""Random-access record sources over local JSONL and Parquet files, as grain ``MapDataset``s.

Files are scanned once when the source is built: every row is parsed and normalised
(:func:`r1jax.data.formats.normalize_record`), so a malformed line, a missing field, a wrong
type or an empty file fails *here*, naming the file, line and field — not later inside a worker
or a jitted step. With ``on_error="skip"`` bad rows are left out of the index and counted
(``source.num_skipped``, ``source.skipped`` holds the first messages). JSONL keeps only byte
offsets in memory and re-reads a row on access; Parquet keeps the rows of the files.
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import grain
import numpy as np

from r1jax.data.errors import DataError, OnError, check_choice, origin_of
from r1jax.data.formats import FORMATS, PURPOSES, Purpose, normalize_record

_MAX_REPORTED = 20


SUFFIXES = (".jsonl", ".json", ".parquet")
"""Data files a directory or glob contributes (JSON files hold one JSON object per line)."""


def expand_paths(paths: Sequence[str | os.PathLike]) -> list[str]:
    """Files, directories (every data file below, recursively) and globs -> sorted file paths.

    Each directory or glob contributes its data files (``SUFFIXES``; hidden files and
    directories skipped) in sorted order, so the record order is the same on every machine.
    A directory or glob with no data file, or a missing path, raises naming it.
    """
    files: list[str] = []
    for entry in map(str, paths):
        path = Path(entry)
        if path.is_dir():
            found = [
                p
                for p in path.rglob("*")
                if p.is_file()
                and p.suffix in SUFFIXES
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            ]
            what = f"directory {entry}"
        elif any(ch in entry for ch in "*?["):
            found = [Path(p) for p in glob.glob(entry, recursive=True) if Path(p).is_file()]
            what = f"pattern {entry!r}"
        else:
            if not path.exists():
                raise FileNotFoundError(f"{entry}: data file does not exist")
            files.append(entry)
            continue
        if not found:
            raise FileNotFoundError(f"{what}: no data files ({', '.join(SUFFIXES)}) in it")
        files.extend(str(p) for p in sorted(found))
    return files


class RecordSource(grain.MapDataset):
    """Normalised records from JSONL (``.jsonl``) and Parquet (``.parquet``) files, directories
    of them (sharded data sets) or glob patterns (``data/train-*.parquet``); see `expand_paths`.

    ``source[i]`` is the normalised record of the i-th valid row (``i`` modulo ``len``, as grain's
    sources do, so ``repeat`` works), with ``_origin = "file:line"`` (1-based line; for Parquet
    ``"file:row <k>"``, 0-based row).
    """

    def __init__(
        self,
        paths: str | os.PathLike | Sequence[str | os.PathLike],
        *,
        fmt: str = "auto",
        purpose: Purpose = "rl",
        field_map: Mapping[str, str] | None = None,
        on_error: OnError = "raise",
    ):
        super().__init__()
        check_choice("fmt", fmt, FORMATS)
        check_choice("purpose", purpose, PURPOSES)
        check_choice("on_error", on_error, ("raise", "skip"))
        paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
        if not paths:
            raise ValueError("RecordSource needs at least one file")
        self.paths = expand_paths(paths)
        self._kw = {"fmt": fmt, "purpose": purpose, "field_map": dict(field_map or {})}
        self._on_error = on_error
        self.num_skipped = 0
        self.skipped: list[str] = []
        self._file_ids: list[int] = []  # per valid row: index into self.paths
        self._keys: list[int] = []  # per valid row: byte offset (JSONL) or row number (Parquet)
        self._line_nos: list[int] = []  # per valid row: 1-based line (JSONL) or row (Parquet)
        self._rows: dict[int, list[Any]] = {}  # Parquet rows by file id
        self._fds: dict[int, int] = {}
        self._pid = None
        for file_id, path in enumerate(self.paths):
            self._scan(file_id, Path(path))
        self._file_ids_arr = np.asarray(self._file_ids, dtype=np.int32)
        self._keys_arr = np.asarray(self._keys, dtype=np.int64)
        self._line_nos_arr = np.asarray(self._line_nos, dtype=np.int64)
        del self._file_ids, self._keys, self._line_nos
        if len(self._keys_arr) == 0:
            why = (
                f" ({self.num_skipped} bad rows skipped: {self.skipped[:3]})"
                if self.num_skipped
                else ""
            )
            raise DataError(f"no valid records{why}", origin=", ".join(self.paths))

    # -- scanning ---------------------------------------------------------------------------
    def _scan(self, file_id: int, path: Path) -> None:
        if not path.exists():
            raise FileNotFoundError(f"{path}: data file does not exist")
        if path.suffix == ".parquet":
            self._scan_parquet(file_id, path)
        else:
            self._scan_jsonl(file_id, path)

    def _scan_jsonl(self, file_id: int, path: Path) -> None:
        found = 0
        with path.open("rb") as f:
            offset, line_no = 0, 0
            for raw in f:
                line_no += 1
                start, offset = offset, offset + len(raw)
                if not raw.strip():
                    continue
                found += 1
                origin = origin_of(path, line_no)
                if self._validate(lambda raw=raw, origin=origin: _parse_json(raw, origin), origin):
                    self._file_ids.append(file_id)
                    self._keys.append(start)
                    self._line_nos.append(line_no)
        if found == 0:
            raise DataError("empty file: no JSON lines", origin=str(path))

    def _scan_parquet(self, file_id: int, path: Path) -> None:
        import pyarrow.parquet as pq

        try:
            rows = pq.read_table(path).to_pylist()
        except Exception as e:  # pyarrow raises several types for a corrupt file
            raise DataError(f"cannot read Parquet file ({e})", origin=str(path)) from e
        if not rows:
            raise DataError("empty file: no rows", origin=str(path))
        self._rows[file_id] = rows
        for k, row in enumerate(rows):
            origin = f"{path}:row {k}"
            if self._validate(lambda row=row: row, origin):
                self._file_ids.append(file_id)
                self._keys.append(k)
                self._line_nos.append(k)

    def _validate(self, read, origin: str) -> bool:
        try:
            normalize_record(read(), origin, **self._kw)
            return True
        except DataError as e:
            if self._on_error == "raise":
                raise
            self.num_skipped += 1
            if len(self.skipped) < _MAX_REPORTED:
                self.skipped.append(str(e))
            return False

    # -- random access ----------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._keys_arr)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.slice(index)
        index = int(index) % len(self)
        file_id, key = int(self._file_ids_arr[index]), int(self._keys_arr[index])
        path = self.paths[file_id]
        if file_id in self._rows:
            return normalize_record(self._rows[file_id][key], f"{path}:row {key}", **self._kw)
        origin = origin_of(path, int(self._line_nos_arr[index]))
        return normalize_record(
            _parse_json(self._read_line(file_id, key), origin), origin, **self._kw
        )

    def _read_line(self, file_id: int, offset: int) -> bytes:
        if self._pid != os.getpid():  # file descriptors do not survive fork/pickling
            self._fds, self._pid = {}, os.getpid()
        fd = self._fds.get(file_id)
        if fd is None:
            fd = self._fds[file_id] = os.open(self.paths[file_id], os.O_RDONLY)
        chunks, pos = [], offset
        while True:
            chunk = os.pread(fd, 65536, pos)
            cut = chunk.find(b"\n")
            if cut >= 0 or not chunk:
                chunks.append(chunk if cut < 0 else chunk[:cut])
                break
            chunks.append(chunk)
            pos += len(chunk)
        return b"".join(chunks)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_fds"], state["_pid"] = {}, None
        return state

    def __str__(self) -> str:
        return f"RecordSource({self.paths}, n={len(self)}, skipped={self.num_skipped})"


def _parse_json(raw: bytes, origin: str) -> Any:
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        msg = e.msg if isinstance(e, json.JSONDecodeError) else str(e)
        raise DataError(f"malformed JSON ({msg}): {raw[:60]!r}", origin=origin) from None
