"""Data sources: everything that turns "where the images are" into a :class:`Dataset`.

:func:`load_dataset` (in :mod:`featmlp.data.load`, with its dispatch) reads the bundled CIFAR-10
sample, the official CIFAR-10 archive, an image folder or archive, tar shards, or any of those
behind an fsspec URL; :func:`list_images` lists image files for prediction. Images are decoded
when indexed (:class:`ImageArray`), chunk by chunk. This module only re-exports: each name lives
in the module that defines it.
"""

from ._cifar import CIFAR10_CLASSES, CIFAR10_MD5, CIFAR10_URL
from ._dataset import Dataset, fingerprint
from ._decode import read_images
from ._download import default_cache_dir
from ._image_array import ImageArray
from ._sources import list_images
from .load import CIFAR10_SOURCE, SAMPLE_SOURCE, load_dataset

# For the later stages, which read files and images as this stage does (not in __all__):
# runs.predict's decoder and pixel limit, tables.store's refusal of FIFOs and devices, the CLI's
# hint that an archive given as a feature file is an image source.
from ._decode import jpeg_decoder  # noqa: F401
from ._files import not_regular  # noqa: F401
from ._images import DEFAULT_MAX_PIXELS  # noqa: F401
from ._names import ARCHIVE_SUFFIXES  # noqa: F401

__all__ = [
    "Dataset", "ImageArray", "load_dataset", "list_images", "read_images", "fingerprint", "default_cache_dir",
    "SAMPLE_SOURCE", "CIFAR10_SOURCE", "CIFAR10_URL", "CIFAR10_MD5", "CIFAR10_CLASSES",
]
