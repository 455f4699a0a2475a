"""A small local-patch reader that tells finding kinds apart, at the magnification each view shows.

- :mod:`.candidates` (NumPy/OpenCV): candidate spots at the finding scale and the patches cut there;
- :mod:`.reading` (torch-free): reading a view, combining views, kind-aware answer rules;
- :mod:`.model` (torch): the 3-layer CNN and its atomic checkpoint;
- :mod:`.train` (torch): ``medvr train-patch-reader``, trained on the procedural train split;
- :mod:`.store`: the cached default checkpoint, built on first use.

Importing this package does not import torch.
"""

from .candidates import CLASSES, ViewGeometry, blob_map, find_candidates, find_peaks
from .reading import Findings, Reading, read_view
from .store import cache_dir, default_path, load_reader

__all__ = ["CLASSES", "Findings", "Reading", "ViewGeometry", "blob_map", "cache_dir", "default_path",
           "find_candidates", "find_peaks", "load_reader", "read_view"]
