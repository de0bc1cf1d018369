"""The work folder: one JSON line per finished input, written as it is computed, so nothing is lost on Ctrl-C.

A sweep's records live in `sweep-<key>.jsonl`, where the key is made of both models' fingerprints and the
check (tolerance, task): a different model pair never reuses them. Each line is keyed by the input's id and
the digest of its feed, so a resumed sweep skips exactly the inputs it finished, and an input whose file
changed is swept again. Diagnoses go to `diagnoses-<key>.jsonl` the same way.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from workbench.errors import WorkbenchError


def default_work_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "workbench" / "sweep"


def sweep_key(reference_bytes: bytes, candidate_bytes: bytes, check) -> str:
    digest = hashlib.sha256()
    for part in (reference_bytes, candidate_bytes, repr(check).encode()):
        digest.update(hashlib.sha256(part).digest())
    return digest.hexdigest()[:16]


def record_key(record: dict) -> str:
    return f"{record['id']}|{record['digest']}"


class ResultStore:
    def __init__(self, folder: Path, key: str):
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise WorkbenchError(f"cannot create the work folder {folder} ({exc.strerror}); pass --work DIR.") from None
        self.results = folder / f"sweep-{key}.jsonl"
        self.diagnoses = folder / f"diagnoses-{key}.jsonl"
        self._handles: dict[Path, object] = {}

    def finished(self) -> dict[str, dict]:
        """record key -> record of every input already swept."""
        return {record_key(r): r for r in _read_lines(self.results)}

    def finished_diagnoses(self) -> dict[str, dict]:
        return {r["key"]: r for r in _read_lines(self.diagnoses)}

    def add(self, record: dict) -> None:
        self._write(self.results, record)

    def add_diagnosis(self, key: str, diagnosis: dict) -> None:
        self._write(self.diagnoses, {"key": key, **diagnosis})

    def _write(self, path: Path, entry: dict) -> None:
        if path not in self._handles:
            self._handles[path] = open(path, "a", encoding="utf-8")
        handle = self._handles[path]
        handle.write(json.dumps(entry, allow_nan=False) + "\n")
        handle.flush()  # on disk (in the OS) before the next input starts: a Ctrl-C loses nothing finished

    def close(self) -> None:
        for handle in self._handles.values():
            handle.close()
        self._handles.clear()


def _read_lines(path: Path) -> list[dict]:
    """Every complete line; a line cut short by a killed process is ignored (that input is swept again)."""
    if not path.exists():
        return []
    entries = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return entries
