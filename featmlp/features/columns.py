"""The columns each handcrafted feature set gives: names, and the sizes they follow from.

Kept apart from the kernels (``texture``, ``hog``, ``color``), which import numba (~0.4 s, more
with its compiled-code cache): the registry, ``feature_names`` and the CLI's help read only
this, and a kernel module is imported when its set is first computed. The kernel modules
re-export these names (``texture.NAMES``, ``hog.names``, ``color.NAMES`` ...).
"""

from __future__ import annotations

from ..errors import DataError

# -- lecture (texture.py) ---------------------------------------------------------------------

TEXTURE_NAMES: tuple[str, ...] = (
    "lbp_energy",
    "lbp_entropy",
    "glcm_contrast",
    "glcm_dissimilarity",
    "glcm_homogeneity",
    "glcm_energy",
    "glcm_correlation",
    "gabor_energy",
    "gabor_entropy",
)

# -- color (color.py) -------------------------------------------------------------------------

HUE_BINS = 8
SAT_BINS = 4
VAL_BINS = 4
_CHANNELS = ("r", "g", "b")

COLOR_NAMES: tuple[str, ...] = (
    *(f"color_mean_{c}" for c in _CHANNELS),
    *(f"color_std_{c}" for c in _CHANNELS),
    *(f"color_hue_{k}" for k in range(HUE_BINS)),
    *(f"color_sat_{k}" for k in range(SAT_BINS)),
    *(f"color_val_{k}" for k in range(VAL_BINS)),
)

# -- hog (hog.py) -----------------------------------------------------------------------------

ORIENTATIONS = 9
CELL = 8  # pixels per cell, both directions
BLOCK = 2  # cells per block, both directions


def hog_grid(height: int, width: int) -> tuple[int, int, int, int]:
    """Cells and blocks of an image: ``(cell_rows, cell_cols, block_rows, block_cols)``.

    Raises
    ------
    DataError
        If the image has no complete block (smaller than 16x16).
    """
    n_cr, n_cc = height // CELL, width // CELL
    n_br, n_bc = n_cr - BLOCK + 1, n_cc - BLOCK + 1
    if n_br <= 0 or n_bc <= 0:
        raise DataError(f"hog needs images of at least {BLOCK * CELL}x{BLOCK * CELL} pixels "
                        f"({BLOCK}x{BLOCK} cells of {CELL}x{CELL}), got {height}x{width} (HxW); "
                        f"resize them, e.g. --image-size 32x32")
    return n_cr, n_cc, n_br, n_bc


def hog_count(height: int, width: int) -> int:
    """``len(hog_names(height, width))``, without making the names (11 million for 20 Mpx).

    Examples
    --------
    >>> hog_count(32, 32)
    324
    """
    _, _, n_br, n_bc = hog_grid(height, width)
    return n_br * n_bc * BLOCK * BLOCK * ORIENTATIONS


def hog_names(height: int = 32, width: int = 32) -> tuple[str, ...]:
    """Column names of hog for ``height`` x ``width`` images, in output order.

    Examples
    --------
    >>> n = hog_names(32, 32)
    >>> len(n), n[0], n[-1]
    (324, 'hog_b0_0_c0_0_o0', 'hog_b2_2_c1_1_o8')
    """
    _, _, n_br, n_bc = hog_grid(height, width)
    return tuple(f"hog_b{br}_{bc}_c{cr}_{cc}_o{o}"
                 for br in range(n_br) for bc in range(n_bc)
                 for cr in range(BLOCK) for cc in range(BLOCK) for o in range(ORIENTATIONS))


HOG_NAMES = hog_names(32, 32)
