"""MedXpertQA MM (Zuo et al., ICML 2025; MIT): expert-level multimodal medical exam questions.

Read in the layout of the official release (huggingface.co/datasets/TsinghuaC3I/MedXpertQA, with
``images.zip`` unpacked)::

    <root>/MM/test.jsonl     2,000 questions
    <root>/MM/dev.jsonl      5 questions (few-shot examples)
    <root>/images/           images.zip unpacked: MM-2000-a.jpeg, MM-2000-b.jpeg, ...
    <root>/Text/...          the text-only subset (not read: it has no images)

One JSON object per line: ``{"id": "MM-2000", "question": "... Answer Choices: (A) ... (E) ...",
"options": {"A": "...", ..., "E": "..."}, "label": "D", "images": ["MM-2000-a.jpeg"],
"medical_task": "Diagnosis", "body_system": "Digestive", "question_type": "Reasoning"}``.
The question text is kept as published (it repeats the choices); ``options`` become the sample's
options in letter order and the answer is the text of the ``label`` option, so every question is
``closed``. ``question_type`` is Reasoning or Understanding, ``organ`` is ``body_system``, and
``medical_task`` (Diagnosis, Treatment, Basic Medicine) is kept in ``meta``.

**Several images.** A question can come with up to several images; the env shows one image, so
``load_image`` tiles them deterministically into one: all are scaled (aspect ratio kept, bicubic) to
the height of the tallest (at most 1024 px), laid out left to right in file order, three per row
for up to three images and ``ceil(sqrt(n))`` per row beyond, 8 px black gaps, rows left-aligned on a
black canvas. The whole canvas is shrunk if it would exceed ``max_image_pixels``. ``meta["images"]``
lists the files in tile order. When every image is grayscale the tiled image stays one broadcast
channel, as ``decode_image`` returns grayscale.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

import numpy as np
from PIL import Image

from .files import DatasetFormatError, DatasetNotFoundError, FileDataset, read_jsonl
from .images import DEFAULT_MAX_PIXELS, decode_image
from .records import LETTERS, letter_index, text_field
from .sample import Sample, as_rgb_uint8

TILE_GAP = 8
MAX_TILE_HEIGHT = 1024


def tile_images(images: Sequence[np.ndarray], max_pixels: int = DEFAULT_MAX_PIXELS,
                gap: int = TILE_GAP, max_height: int = MAX_TILE_HEIGHT) -> np.ndarray:
    """Tile ``(H, W, 3)`` uint8 images into one read-only image (layout in the module docstring)."""
    if not images:
        raise ValueError("no images to tile")
    if len(images) == 1:
        return images[0] if not images[0].flags.writeable else as_rgb_uint8(images[0])
    # Grayscale sources (decode_image broadcasts one channel) are tiled as one channel and broadcast back.
    gray = all(im.ndim == 3 and im.strides[2] == 0 for im in images)
    planes = [im[:, :, 0] if gray else im for im in images]
    n = len(images)
    per_row = n if n <= 3 else math.ceil(math.sqrt(n))
    height = min(max(im.shape[0] for im in images), max_height)

    def widths_at(h: int) -> list[int]:
        return [max(1, round(im.shape[1] * h / im.shape[0])) for im in images]

    def canvas_size(h: int) -> tuple[int, int]:
        widths = widths_at(h)
        rows = [widths[i:i + per_row] for i in range(0, n, per_row)]
        width = max(sum(r) + gap * (len(r) - 1) for r in rows)
        return width, h * len(rows) + gap * (len(rows) - 1)

    while height > 1 and canvas_size(height)[0] * canvas_size(height)[1] > max_pixels:
        height = max(1, int(height * 0.9))
    width, total_height = canvas_size(height)
    canvas = np.zeros((total_height, width) if gray else (total_height, width, 3), np.uint8)
    for i, (im, w) in enumerate(zip(planes, widths_at(height))):
        row, col = divmod(i, per_row)
        x = sum(widths_at(height)[row * per_row:row * per_row + col]) + gap * col
        y = row * (height + gap)
        resized = np.asarray(Image.fromarray(np.ascontiguousarray(im)).resize((w, height), Image.Resampling.BICUBIC))
        canvas[y:y + height, x:x + w] = resized
    if gray:
        tiled = np.broadcast_to(canvas[:, :, None], (*canvas.shape, 3))
        return tiled  # broadcast views are read-only
    return as_rgb_uint8(canvas)


class MedXpertQADataset(FileDataset):
    """MedXpertQA's multimodal subset from ``MM/<split>.jsonl`` and ``images/`` (see the module docstring).

    Args:
        image_dir: Folder of the unpacked ``images.zip``, relative to the root (default ``"images"``).
        The other arguments are :class:`~medvr_env.data.files.FileDataset`'s.
    """

    name = "medxpertqa"
    title = "MedXpertQA MM"
    default_dirname = "medxpertqa"
    homepage = "https://huggingface.co/datasets/TsinghuaC3I/MedXpertQA (MM subset + images.zip)"
    layout = "MM/test.jsonl, MM/dev.jsonl and images/ (images.zip unpacked)"
    splits = ("test", "dev")
    split_aliases = {"validation": "dev", "val": "dev"}

    def __init__(
        self,
        split: str = "test",
        *,
        image_dir: str = "images",
        **kwargs: Any,
    ) -> None:
        self.image_dir = str(image_dir).strip("/")
        super().__init__(split, **kwargs)
        self._config.update(image_dir=self.image_dir)

    def read_split(self, split: str) -> Iterable[Sample]:
        manifest = self.root / "MM" / f"{split}.jsonl"
        if not manifest.is_file():
            raise DatasetNotFoundError(
                f"MedXpertQA MM manifest not found: tried {manifest.resolve()}. Expected layout: {self.layout}. "
                f"{self.title} is published at {self.homepage}"
            )
        for i, record in enumerate(read_jsonl(manifest)):
            yield self._sample(record, f"{manifest.name} record {i} (line order)", split)

    def _sample(self, record: dict[str, Any], where: str, split: str) -> Sample:
        raw_options = record.get("options")
        if not isinstance(raw_options, dict) or len(raw_options) < 2:
            raise DatasetFormatError(f"{where}: 'options' must be an object {{\"A\": ..., \"B\": ...}}, "
                                     f"got {raw_options!r}")
        letters = sorted(str(k).strip().upper() for k in raw_options)
        if letters != list(LETTERS[:len(letters)]):
            raise DatasetFormatError(f"{where}: option keys must be A, B, C, ... in sequence, got {letters}")
        by_letter = {str(k).strip().upper(): v for k, v in raw_options.items()}
        options = [text_field(by_letter, letter, f"{where} options") for letter in letters]
        label = text_field(record, "label", where)
        index = letter_index(label, len(options))
        if index is None:
            raise DatasetFormatError(f"{where}: label {label!r} is not one of the option letters {letters}")
        images = record.get("images")
        if not isinstance(images, list) or not images or not all(isinstance(x, str) and x.strip() for x in images):
            raise DatasetFormatError(f"{where}: 'images' must be a non-empty list of file names, got {images!r}")
        paths = [f"{self.image_dir}/{name.strip()}" for name in images]
        return Sample(
            sample_id=f"medxpertqa/{split}/{text_field(record, 'id', where)}",
            question=text_field(record, "question", where),
            answer=options[index],
            image_key="|".join(paths),
            options=tuple(options),
            answer_type="closed",
            question_type=text_field(record, "question_type", where, required=False),
            organ=text_field(record, "body_system", where, required=False),
            split=split,
            meta={"id": text_field(record, "id", where), "label": LETTERS[index], "images": paths,
                  "medical_task": text_field(record, "medical_task", where, required=False)},
        )

    def read_pixels(self, sample: Sample) -> np.ndarray:
        images = [decode_image(self.path_of(p), max_pixels=self.max_image_pixels) for p in sample.meta["images"]]
        return tile_images(images, max_pixels=self.max_image_pixels)
