"""A run folder on disk, and writing it so that nothing is lost on a crash.

    <run>/config.json      the training configuration (TrainConfig), written once
    <run>/metrics.jsonl    one JSON object a line: {"kind": "train" | "valid" | "end", "step", ...}
    <run>/checkpoint.pt    the latest full training state (model, estimator, optimizer, RNGs, data
                           order, step), replaced atomically every N steps and at the end
    <run>/best.pt          the model with the best validation bound so far (early stopping, D.5)
    <run>/eval.json        results of `eval`: {"test@5000": {...}, "train@5000": {...}}
    <run>/per_image/       each evaluation's per-image bounds and the indices of its images in
                           the split (.npz), for paired comparisons of runs on the same images

Every file is written to a temporary file in the same folder, flushed to disk, then renamed over the
old one (``os.replace``), so a crash leaves either the old or the new file, never a torn one.
Checkpoints also carry a sha256 digest of their contents (``save_checkpoint``), and
``load_checkpoint`` refuses, with a CheckpointError that says why, a file that is truncated,
corrupt (including a flipped bit that torch.load would not notice) or not a checkpoint at all.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from typing import Dict, Iterator, List, Optional

import torch

__all__ = [
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_save",
    "save_checkpoint",
    "CheckpointError",
    "state_digest",
    "append_jsonl",
    "read_jsonl",
    "truncate_jsonl",
    "read_json",
    "write_json",
    "load_checkpoint",
    "run_dirs",
    "latest",
    "save_per_image",
    "load_per_image",
    "CHECKPOINT",
    "BEST",
    "CONFIG",
    "METRICS",
    "EVAL",
    "PER_IMAGE",
]

CHECKPOINT, BEST, CONFIG, METRICS, EVAL = (
    "checkpoint.pt",
    "best.pt",
    "config.json",
    "metrics.jsonl",
    "eval.json",
)
PER_IMAGE = "per_image"  # <run>/per_image/<split>@<m>[_n<n>s<seed>].npz: values and image indices


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()  # what open() would give a new file (mkstemp gives 0600)


def _atomic(path: str, write) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, _FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str, data: bytes) -> None:
    _atomic(path, lambda f: f.write(data))


def atomic_write_text(path: str, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_save(obj, path: str) -> None:
    """torch.save through a temporary file and os.replace."""
    _atomic(path, lambda f: torch.save(obj, f))


DIGEST_KEY = "sha256"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: truncated, corrupt, not a checkpoint, or not matching."""


def _feed(h, obj) -> None:
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(obj, dict):
        h.update(f"D{len(obj)}".encode())
        for k in sorted(obj, key=repr):
            _feed(h, k)
            _feed(h, obj[k])
    elif isinstance(obj, (list, tuple)):
        h.update(f"L{len(obj)}".encode())
        for v in obj:
            _feed(h, v)
    else:  # int, float (repr is exact), str, bool, None
        h.update(f"{type(obj).__name__}:{obj!r};".encode())


def state_digest(state: Dict) -> str:
    """sha256 over a checkpoint's contents (tensors byte for byte, with dtypes, shapes and keys);
    the digest entry itself is left out."""
    h = hashlib.sha256()
    _feed(h, {k: v for k, v in state.items() if k != DIGEST_KEY})
    return h.hexdigest()


def save_checkpoint(state: Dict, path: str) -> None:
    """atomic_save of `state` with its digest added (under the key "sha256")."""
    atomic_save({**state, DIGEST_KEY: state_digest(state)}, path)


def load_checkpoint(path: str) -> Dict:
    """The state saved by save_checkpoint (or atomic_save: files without a digest load unchecked).

    Raises FileNotFoundError when there is none, CheckpointError when the file is unreadable
    (truncated, not a torch file), is not a dict with a "format", or does not match its digest."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - zip, pickle and EOF errors all mean the same here
        why = (str(e).strip().splitlines() or [""])[0][:200]
        raise CheckpointError(
            f"{path} is not a readable checkpoint (truncated or corrupt? {type(e).__name__}: "
            f"{why}). Checkpoints are replaced atomically, so this file was damaged after it was "
            "written: restore a copy or start the run again"
        ) from e
    if not isinstance(state, dict) or "format" not in state:
        raise CheckpointError(
            f"{path} is not a concrete_ext zoo checkpoint (a dict with a "
            f"'format' entry), got {type(state).__name__}"
        )
    digest = state.pop(DIGEST_KEY, None)
    if digest is not None and digest != state_digest(state):
        raise CheckpointError(
            f"{path} is corrupt: its contents do not match the sha256 digest saved with them"
        )
    return state


def append_jsonl(path: str, record: Dict) -> None:
    """Append one line and flush it to disk (a crash loses at most the line being written)."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: str) -> List[Dict]:
    """The records of a JSON-lines file; a torn last line (crash while writing) is skipped."""
    if not os.path.isfile(path):
        return []
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


def truncate_jsonl(path: str, max_step: int) -> None:
    """Keep the records with step <= max_step (when resuming from a checkpoint at max_step)."""
    records = [r for r in read_jsonl(path) if r.get("step", 0) <= max_step]
    atomic_write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in records))


def read_json(path: str, default=None):
    if not os.path.isfile(path):
        return default
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def write_json(path: str, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def run_dirs(paths: List[str]) -> Iterator[str]:
    """Run folders among ``paths``: each path that holds a config.json, or its sub-folders that do."""
    for p in paths:
        if os.path.isfile(os.path.join(p, CONFIG)):
            yield p
        elif os.path.isdir(p):
            for name in sorted(os.listdir(p)):
                sub = os.path.join(p, name)
                if os.path.isfile(os.path.join(sub, CONFIG)):
                    yield sub


def latest(run_dir: str, which: str = "best") -> Optional[str]:
    """Path of best.pt (``which="best"``, falling back to checkpoint.pt) or of checkpoint.pt."""
    best, last = os.path.join(run_dir, BEST), os.path.join(run_dir, CHECKPOINT)
    if which == "best" and os.path.isfile(best):
        return best
    return last if os.path.isfile(last) else None


def _per_image_name(key: str) -> str:
    return key.replace("/", "_") + ".npz"


def save_per_image(run_dir: str, key: str, values, indices) -> str:
    """Write an evaluation's per-image bounds (float64) and the indices of its images in the
    split (int64) to ``<run>/per_image/``; returns the path relative to the run folder."""
    import io

    import numpy as np

    values = np.asarray(values, dtype=np.float64)
    indices = np.asarray(indices, dtype=np.int64)
    if values.shape != indices.shape:
        raise ValueError(f"{values.shape[0]} values for {indices.shape[0]} image indices")
    buf = io.BytesIO()
    np.savez(buf, values=values, indices=indices)
    rel = os.path.join(PER_IMAGE, _per_image_name(key))
    atomic_write_bytes(os.path.join(run_dir, rel), buf.getvalue())
    return rel


def load_per_image(run_dir: str, rel: str):
    """(values, indices) saved by save_per_image, or None when the file is missing."""
    import numpy as np

    path = os.path.join(run_dir, rel)
    if not os.path.isfile(path):
        return None
    with np.load(path) as z:
        return z["values"], z["indices"]
