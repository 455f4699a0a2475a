"""Where the patch reader lives, and building it on first use.

The default checkpoint is ``patch_reader-<generator>.pt`` in the MedVR cache folder: ``$MEDVR_CACHE``,
else ``$XDG_CACHE_HOME/medvr``, else ``~/.cache/medvr``. The procedural generator's version is in the
name, so a reader trained on an older task is never picked up by a newer one.
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path
from typing import Any

CACHE_ENV = "MEDVR_CACHE"
_LOCK = threading.Lock()
_LOADED: dict[Path, Any] = {}


def cache_dir() -> Path:
    """``$MEDVR_CACHE``, else ``$XDG_CACHE_HOME/medvr``, else ``~/.cache/medvr``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "medvr"
    return Path.home() / ".cache" / "medvr"


def default_path() -> Path:
    """The cached reader for the current procedural generator."""
    from medvr_env.data.procedural import GENERATOR

    return cache_dir() / f"patch_reader-{GENERATOR}.pt"


def load_reader(path: str | Path | None = None, build: bool = True, progress: bool = True):
    """The patch reader at ``path`` (default: :func:`default_path`), loaded once per process.

    When the default checkpoint is missing and ``build`` is true, it is trained now (a few CPU minutes,
    with a progress bar) and saved there atomically. An explicit ``path`` that does not exist is an error.
    """
    try:
        from .model import PatchReader
    except ModuleNotFoundError as exc:
        if exc.name != "torch":
            raise
        from ..base import AgentSetupError

        raise AgentSetupError(
            "the patch reader that the scripted agents read views with needs PyTorch: install it with "
            "`pip install torch==2.13.0` (CPU; plain `torch` pulls a CUDA build) and `pip install -e \".[agents]\"`, "
            "or use --agent blob-detector, which needs no torch"
        ) from None

    explicit = path is not None
    target = Path(path).expanduser() if explicit else default_path()
    with _LOCK:
        if target in _LOADED:
            return _LOADED[target]
        if not target.is_file():
            if explicit or not build:
                raise FileNotFoundError(
                    f"no patch reader at {target}; build one with `medvr train-patch-reader --out {target}`"
                )
            from .train import format_report, train_patch_reader

            print(f"building the patch reader (first use; a few CPU minutes) -> {target}", file=sys.stderr, flush=True)
            reader, report = train_patch_reader(progress=progress)
            reader.save(target)
            print(format_report(report), file=sys.stderr, flush=True)
        reader = PatchReader.load(target)
        _LOADED[target] = reader
        return reader


__all__ = ["CACHE_ENV", "cache_dir", "default_path", "load_reader"]
