"""Atomic, pickle-free persistence: safetensors for tensors, JSON for everything else.

A file is written to a temporary name in the same folder, flushed to disk and renamed over the target, so a crash
never leaves a half-written file in place of a good one. A folder (a checkpoint) is written beside its target and
swapped in with two renames; :func:`resolve_folder` recovers the previous folder if a crash fell between them. After
every rename the parent folder is fsynced too (a rename is durable only once its directory is). Files and folders get
the user's normal permissions (umask), not the 0600 / 0700 of :mod:`tempfile`; leftovers of an interrupted write of the
same target are removed by the next write.

Every safetensors file carries the SHA-256 of its tensors in its metadata (``kakusan.sha256``); :func:`load_tensors`
verifies it, so a flipped bit in the weights is an error, not a model that samples NaN. Failures a user can meet (a
damaged file, a full or read-only disk) are :class:`~kakusan.KakusanError` naming the file.
"""
from __future__ import annotations

import csv
import errno
import glob
import hashlib
import io
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes


CHECKSUM_KEY = "kakusan.sha256"


def _error(e: OSError, path: Path, doing: str):
    """A user-facing error for an OS failure (disk full, read-only, permissions) while ``doing`` ``path``."""
    from .. import KakusanError

    reason = {errno.ENOSPC: "the disk is full", errno.EROFS: "the file system is read-only",
              errno.EACCES: "permission denied", errno.EPERM: "permission denied"}.get(e.errno, e.strerror or str(e))
    return KakusanError(f"cannot {doing} {path}: {reason} (nothing already written was changed)")


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


UMASK = _read_umask()  # read once, at import (setting it is process-wide and not thread-safe)
# for bench/kill_resume.py: seconds to wait before each rename, so that kills land inside writes (0 = off)
SLOW_WRITES = float(os.environ.get("KAKUSAN_SLOW_WRITES", "0") or 0)


def fsync_dir(folder: str | Path) -> None:
    """Make the renames inside ``folder`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_leftovers(target: Path) -> None:
    """Remove what an interrupted write of ``target`` left beside it (``.NAME.*.tmp`` files and folders)."""
    for p in Path(target).parent.glob(f".{glob.escape(Path(target).name)}.*.tmp"):
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)


def remove_staging(*folders: str | Path) -> None:
    """Remove every leftover of an interrupted write (``.NAME.*.tmp``) in ``folders`` (only for folders kakusan owns,
    such as a run folder)."""
    for folder in folders:
        for p in Path(folder).glob(".*.tmp") if Path(folder).is_dir() else []:
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)


def _atomic_replace(path: Path, write) -> None:
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_leftovers(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as e:
        raise _error(e, path.parent, "write into") from e
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~UMASK)  # after the write: a writer may replace the file (safetensors does)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        if SLOW_WRITES:
            time.sleep(SLOW_WRITES)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise _error(e, path, "write") from e
        raise


def tensors_digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over every tensor's name, dtype, shape and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def save_tensors(tensors: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """Write ``tensors`` atomically, with their checksum in the metadata."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    metadata = {**(metadata or {}), CHECKSUM_KEY: tensors_digest(tensors)}
    # serialised in memory, then written by this module's one write path: a full disk is an OSError like any other
    # write's (safetensors' own file writer reports it as a SafetensorError)
    write_bytes(safetensors_bytes(tensors, metadata=metadata), path)


def load_tensors(path: str | Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Load a safetensors file (this never unpickles anything) and verify its checksum where it has one."""
    from safetensors import safe_open

    from .. import KakusanError

    path = Path(path)
    if not path.is_file():
        raise KakusanError(f"{path}: no such file")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(path))
    except OSError as e:
        raise _error(e, path, "read") from e
    except SafetensorError as e:  # a damaged header or data
        raise KakusanError(f"{path} is not a readable safetensors file; it is truncated or damaged "
                           f"({str(e).splitlines()[0] if str(e) else type(e).__name__})") from e
    if CHECKSUM_KEY in meta and tensors_digest(tensors) != meta[CHECKSUM_KEY]:
        raise KakusanError(f"{path} is damaged: its tensors do not match the checksum stored with them")
    return {k: v.to(device) for k, v in tensors.items()}


def write_json(obj, path: str | Path) -> None:
    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=False)
            f.write("\n")
    _atomic_replace(Path(path), write)


def read_json(path: str | Path):
    """A JSON file's content; a missing, unreadable or malformed file is a one-line error naming it."""
    from .. import KakusanError

    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise KakusanError(f"{path}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise KakusanError(f"{path} is not valid JSON ({str(e).splitlines()[0]}); it is damaged or not kakusan's") from e
    except OSError as e:
        raise _error(e, Path(path), "read") from e


def write_npz(path: str | Path, arrays: dict, stream: tuple | None = None) -> None:
    """An ``.npz`` (deflated, no pickles) of ``arrays``, written atomically; ``stream = (name, shape, dtype, parts)``
    adds one large array written part by part (``parts`` yields arrays whose rows fill ``shape`` in order), so it never
    has to be in memory whole."""
    import zipfile

    import numpy as np

    def write(tmp):
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as z:
            if stream is not None:
                name, shape, dtype, parts = stream
                dtype, rows = np.dtype(dtype), 0
                with z.open(f"{name}.npy", "w", force_zip64=True) as f:
                    np.lib.format.write_array_header_1_0(f, {"descr": np.lib.format.dtype_to_descr(dtype),
                                                             "fortran_order": False, "shape": tuple(shape)})
                    for part in parts:
                        part = np.ascontiguousarray(part, dtype=dtype)
                        rows += len(part)
                        f.write(part.tobytes())
                if rows != shape[0]:
                    raise ValueError(f"{name}: the parts hold {rows} rows, the shape says {shape[0]}")
            for name, value in arrays.items():
                with z.open(f"{name}.npy", "w", force_zip64=True) as f:
                    np.lib.format.write_array(f, np.asarray(value), allow_pickle=False)
    _atomic_replace(Path(path), write)


def write_bytes(data: bytes, path: str | Path) -> None:
    _atomic_replace(Path(path), lambda tmp: Path(tmp).write_bytes(data))


def write_figure(fig, path: str | Path, **savefig) -> None:
    """A matplotlib figure as an image file (format from the suffix), written atomically."""
    buf = io.BytesIO()
    fig.savefig(buf, format=Path(path).suffix.lstrip(".") or "png", **savefig)
    write_bytes(buf.getvalue(), path)


def write_text(text: str, path: str | Path) -> None:
    write_bytes(text.encode(), path)


def write_csv(fields, lines, path: str | Path) -> None:
    """A CSV with a header of ``fields`` and one line per value list of ``lines``, written atomically."""
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(fields)
    writer.writerows(lines)
    write_text(text.getvalue(), path)


def require_empty_output(out: str | Path) -> Path:
    """``out`` as a Path, if it is new or an empty folder; otherwise a clear error (and nothing is touched)."""
    from .. import KakusanError

    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise KakusanError(f"output {out} already exists and is not empty; choose another output folder "
                           "(nothing was touched)")
    return out


def resolve_folder(path: str | Path) -> Path:
    """The folder at ``path``, or its previous version if a :func:`swap_folder` was cut between its two renames."""
    path = Path(path)
    old = path.with_name(path.name + ".old")
    if not path.exists() and old.exists():
        return old
    return path


def swap_folder(staging: Path, target: Path) -> None:
    """Replace ``target`` by the fully written ``staging`` folder: target -> target.old, staging -> target, rm old."""
    staging, target = Path(staging), Path(target)
    old = target.with_name(target.name + ".old")
    if SLOW_WRITES:
        time.sleep(SLOW_WRITES)
    try:
        if old.exists() and target.exists():
            shutil.rmtree(old)
        if target.exists():
            os.replace(target, old)
            fsync_dir(target.parent)
        os.replace(staging, target)
        fsync_dir(target.parent)
        if old.exists():
            shutil.rmtree(old)
    except OSError as e:
        raise _error(e, target, "replace") from e


def staging_folder(target: Path) -> Path:
    """A fresh, empty folder beside ``target`` to write a new version into."""
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_leftovers(target)
        folder = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
        os.chmod(folder, 0o777 & ~UMASK)
    except OSError as e:
        raise _error(e, target.parent, "write into") from e
    return folder
