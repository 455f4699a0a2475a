"""SLAKE (Liu et al., ISBI 2021; CC BY 4.0): bilingual radiology VQA with masks and detection boxes.

Read in the layout of the official **Slake1.0** release (www.med-vqa.com/slake; the same files are
on the Hugging Face Hub as ``BoKelvin/SLAKE``, with ``imgs.zip`` unpacked)::

    <root>/train.json        list of question records (English and Chinese mixed)
    <root>/validate.json     (also read as validation.json, the name some mirrors use)
    <root>/test.json
    <root>/imgs/xmlab<N>/source.jpg        the image
    <root>/imgs/xmlab<N>/mask.png          semantic mask: one pixel value per organ / lesion, 0 = background
    <root>/imgs/xmlab<N>/detection.json    [{"<label>": [x, y, w, h]}, ...] boxes in source.jpg pixels

A record looks like ``{"img_id": 102, "img_name": "xmlab102/source.jpg", "question": "...",
"answer": "CT", "q_lang": "en", "location": "Lung", "modality": "CT", "answer_type": "OPEN",
"base_type": "vqa", "content_type": "Modality", "triple": ["vhead", "_", "_"], "qid": 11934}``;
``img_name`` is relative to ``imgs/``. The sample's ``question_type`` is ``content_type``
(Modality, Position, Organ, Size, Abnormality, Quantity, Color, Shape, Plane, KG), ``organ`` is
``location`` and ``modality`` is ``modality``; ``base_type``, ``triple``, ``q_lang`` and the image id are
kept in ``meta``.

**Language.** Every split mixes English (``q_lang == "en"``) and Chinese (``"zh"``) questions.
English only is the default, as the literature reports it; ``language="zh"`` or ``"all"`` select
the others.

**Evaluation boxes.** ``eval_boxes`` hold, for every question on an image, the boxes of that image's
``detection.json`` (``[x, y, w, h]`` converted to ``(x1, y1, x2, y2)``) followed by one box per
distinct non-zero value of ``mask.png`` (the bounding box of that organ's pixels; a mask with more
than 64 distinct values is reduced to the single box of all its non-zero pixels). Their names are in
``meta["eval_box_labels"]`` (``"Liver"``, ``"mask:3"``, ...). Boxes are computed once per image when
the split is read: one small JSON and one PNG decode per image (a few milliseconds; ``mask_boxes=False``
skips the masks). A missing ``detection.json`` or ``mask.png`` just contributes no box. The boxes are
in the mask's own pixels, which in the release are those of ``source.jpg``. They are evaluation-only:
the env never shows them to the policy.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from PIL import Image

from .files import DatasetFormatError, DatasetNotFoundError, FileDataset, read_json, require_field
from .images import DEFAULT_MAX_PIXELS, UnsafePathError, read_regular_file
from .records import one_of, text_field, xywh_to_box
from .sample import BoxTuple, Sample

LANGUAGES = ("en", "zh", "all")
MAX_MASK_LABELS = 64


class SLAKEDataset(FileDataset):
    """SLAKE from the official Slake1.0 layout (see the module docstring).

    Args:
        language: ``"en"`` (default), ``"zh"`` or ``"all"``.
        mask_boxes: Also turn ``mask.png`` into evaluation boxes (default ``True``).
        The other arguments are :class:`~medvr_env.data.files.FileDataset`'s.
    """

    name = "slake"
    title = "SLAKE"
    default_dirname = "slake"
    homepage = "https://www.med-vqa.com/slake/ (Slake1.0; also huggingface.co/datasets/BoKelvin/SLAKE)"
    layout = "train.json, validate.json, test.json and imgs/xmlab<N>/{source.jpg,mask.png,detection.json}"
    splits = ("train", "validate", "test")
    split_aliases = {"val": "validate", "validation": "validate", "dev": "validate"}

    def __init__(
        self,
        split: str = "test",
        *,
        language: str = "en",
        mask_boxes: bool = True,
        **kwargs: Any,
    ) -> None:
        self.language = one_of(language, LANGUAGES, "SLAKE language")
        self.mask_boxes = bool(mask_boxes)
        super().__init__(split, **kwargs)
        self._config.update(language=self.language, mask_boxes=self.mask_boxes)

    def read_split(self, split: str) -> Iterable[Sample]:
        candidates = [f"{split}.json"] + (["validation.json"] if split == "validate" else [])
        manifest = next((self.root / c for c in candidates if (self.root / c).is_file()), None)
        if manifest is None:
            raise DatasetNotFoundError(
                f"SLAKE manifest not found: tried {[str(self.root.resolve() / c) for c in candidates]}. "
                f"Expected layout: {self.layout}. {self.title} is published at {self.homepage}"
            )
        records = read_json(manifest)
        if not isinstance(records, list):
            raise DatasetFormatError(f"{manifest}: expected a JSON list of records, got {type(records).__name__}")
        boxes_by_folder: dict[str, tuple[tuple[BoxTuple, ...], tuple[str, ...]]] = {}
        for i, record in enumerate(records):
            where = f"{manifest.name} record {i}"
            if not isinstance(record, dict):
                raise DatasetFormatError(f"{where}: expected a JSON object, got {type(record).__name__}")
            lang = text_field(record, "q_lang", where)
            if self.language != "all" and lang != self.language:
                continue
            img_name = text_field(record, "img_name", where)
            folder = Path(img_name.replace("\\", "/")).parent.as_posix()
            if folder not in boxes_by_folder:
                boxes_by_folder[folder] = self._image_boxes(folder, where)
            yield self._sample(record, where, split, img_name, lang, *boxes_by_folder[folder])

    def _sample(self, record: dict[str, Any], where: str, split: str, img_name: str, lang: str,
                boxes: tuple[BoxTuple, ...], labels: tuple[str, ...]) -> Sample:
        answer_type = text_field(record, "answer_type", where).upper()
        if answer_type not in ("OPEN", "CLOSED"):
            raise DatasetFormatError(f"{where}: answer_type must be OPEN or CLOSED, got {answer_type!r}")
        triple = record.get("triple", [])
        return Sample(
            sample_id=f"slake/{split}/{require_field(record, 'qid', where)}",
            question=text_field(record, "question", where),
            answer=text_field(record, "answer", where),
            image_key=f"imgs/{img_name}",
            answer_type="closed" if answer_type == "CLOSED" else "open",
            question_type=text_field(record, "content_type", where, required=False),
            modality=text_field(record, "modality", where, required=False),
            organ=text_field(record, "location", where, required=False),
            split=split,
            eval_boxes=boxes,
            meta={
                "q_lang": lang,
                "img_id": record.get("img_id"),
                "img_name": img_name,
                "base_type": text_field(record, "base_type", where, required=False),
                "triple": [str(t) for t in triple] if isinstance(triple, list) else [],
                "eval_box_labels": list(labels),
            },
        )

    # ------------------------------------------------------------ evaluation boxes
    def _image_boxes(self, folder: str, where: str) -> tuple[tuple[BoxTuple, ...], tuple[str, ...]]:
        """The detection boxes, then the mask boxes, of one ``imgs/xmlab<N>`` folder."""
        try:
            detection = self.path_of(f"imgs/{folder}/detection.json")
            mask = self.path_of(f"imgs/{folder}/mask.png")
        except UnsafePathError as exc:
            raise UnsafePathError(f"{where}: {exc}") from None
        boxes: list[BoxTuple] = []
        labels: list[str] = []
        if detection.is_file():
            for label, box in _read_detection(detection):
                boxes.append(box)
                labels.append(label)
        if self.mask_boxes and mask.is_file():
            for value, box in mask_label_boxes(mask, self.max_image_pixels):
                boxes.append(box)
                labels.append(f"mask:{value}")
        return tuple(boxes), tuple(labels)


def _read_detection(path: Path) -> list[tuple[str, BoxTuple]]:
    """``detection.json``: a list of ``{label: [x, y, w, h]}`` objects (a single object is accepted too)."""
    data = read_json(path)
    entries = [data] if isinstance(data, dict) else data
    if not isinstance(entries, list):
        raise DatasetFormatError(f"{path}: expected a list of {{label: [x, y, w, h]}} objects, "
                                 f"got {type(data).__name__}")
    out = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise DatasetFormatError(f"{path} entry {i}: expected {{label: [x, y, w, h]}}, got {entry!r}")
        for label, box in entry.items():
            out.append((str(label), xywh_to_box(box, f"{path} entry {i} ({label!r})")))
    return out


def mask_label_boxes(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> list[tuple[int, BoxTuple]]:
    """One ``(value, (x1, y1, x2, y2))`` per distinct non-zero value of a label mask, in value order.

    Colour masks are compared by colour (packed RGB). ``x2``/``y2`` are exclusive pixel edges, so a
    single-pixel region at (3, 4) gives ``(3, 4, 4, 5)``. More than ``MAX_MASK_LABELS`` distinct values
    (an anti-aliased or photographic mask) gives one box of all non-zero pixels, labelled ``0``.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(read_regular_file(path))) as im:
                if im.width * im.height > max_pixels:
                    raise DatasetFormatError(f"mask {path} is {im.width}x{im.height}, over {max_pixels:,} pixels")
                if im.mode in ("RGB", "RGBA", "P", "PA", "LA", "CMYK", "YCbCr"):
                    rgb = np.asarray(im.convert("RGB")).astype(np.uint32)
                    labels = (rgb[:, :, 0] << 16) | (rgb[:, :, 1] << 8) | rgb[:, :, 2]
                else:
                    labels = np.asarray(im).astype(np.int64)
    except DatasetFormatError:
        raise
    except Exception as exc:  # PIL raises many types for damaged files
        raise DatasetFormatError(f"cannot read mask {path}: {type(exc).__name__}: {exc}") from exc
    values = np.unique(labels)
    values = values[values != 0]
    if values.size == 0:
        return []
    if values.size > MAX_MASK_LABELS:
        return [(0, _bbox(labels != 0))]
    return [(int(v), _bbox(labels == v)) for v in values]


def _bbox(region: np.ndarray) -> BoxTuple:
    rows = np.flatnonzero(region.any(axis=1))
    cols = np.flatnonzero(region.any(axis=0))
    return (float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1))
