from .sample import Sample, VQADataset, as_rgb_uint8, format_options, option_letter
from .procedural import ProceduralDataset
