"""Files: one atomic write and one sha256 for the whole project (bottom layer: imports nothing of headgan_jax)."""
from __future__ import annotations

import hashlib
import os
import uuid

from etils import epath


def write_atomic(path: str | os.PathLike | epath.Path, data: bytes | str) -> None:
  """Writes `data` (str as UTF-8) to a temporary name beside `path`, then renames it over `path` (replacing an older
  one), creating missing folders: a reader never sees half a file, on local disks and object stores alike."""
  path = epath.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.parent / f'.tmp-{uuid.uuid4().hex}-{path.name}'
  try:
    tmp.write_bytes(data.encode('utf-8') if isinstance(data, str) else data)
    tmp.replace(path)
  except BaseException:
    if tmp.exists():
      tmp.unlink()
    raise


def file_sha256(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
  """Hex sha256 of a file, read in chunks (weight files are hundreds of MB)."""
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for chunk in iter(lambda: f.read(chunk_size), b''):
      digest.update(chunk)
  return digest.hexdigest()
