r"""Names as a terminal may show them: control characters escaped, never sent raw.

A class folder named ``cat\x1b[31m`` or a file named ``a\nb.png`` would otherwise recolour the
terminal, move its cursor, or split one line of output into two. :func:`printable` is the one
place that escapes them, for every line the command line prints (tables, summaries, warnings,
errors, predict's TSV lines); files featmlp writes (CSV, JSON, run directories) keep the real
names.
"""

from __future__ import annotations

import contextlib
import re

# Characters that act on a terminal or on the text's layout rather than show as themselves:
# C0 controls, DEL, C1 controls (U+0080-U+009F, e.g. CSI U+009B), the bidirectional overrides,
# embeddings and isolates (text shown in another order than it is: "Trojan Source"), the
# directional marks, the line and paragraph separators, and lone surrogates (the bytes of a file
# name that are not UTF-8, as Python decodes them: U+DC80-U+DCFF is the byte 0x80-0xFF).
_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}
_FORMAT = (0x061C, 0x200E, 0x200F, 0x2028, 0x2029, *range(0x202A, 0x202F), *range(0x2066, 0x206A))


def _escape(code: int) -> str:
    if 0xDC80 <= code <= 0xDCFF:  # surrogateescape: the original byte
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


_TABLE = {code: _NAMED.get(chr(code)) or _escape(code)
          for code in (*range(0x20), *range(0x7F, 0xA0), *_FORMAT, *range(0xD800, 0xE000))}
_TSV_TABLE = {**_TABLE, ord("\\"): "\\\\"}


def printable(text, *, tsv: bool = False) -> str:
    r"""``text`` with every control character escaped: ``\t``, ``\n``, ``\r``, else ``\xNN``
    (``\uNNNN`` above U+00FF); other characters, accented or not, are kept.

    ``tsv=True`` also escapes the backslash as ``\\``, so that the text is one field of a
    tab-separated line that reads back unambiguously (PostgreSQL COPY's text format: ``\t``,
    ``\n``, ``\r``, ``\\`` and ``\xNN``); that is how ``featmlp predict`` writes file and class
    names.

    Examples
    --------
    >>> printable("cat\x1b[31m")
    'cat\\x1b[31m'
    >>> printable("a\tb\\c", tsv=True)
    'a\\tb\\\\c'
    >>> printable("chat café")
    'chat café'
    """
    return str(text).translate(_TSV_TABLE if tsv else _TABLE)


@contextlib.contextmanager
def printable_warnings():
    """While inside: the warnings Python prints (another library's, e.g. matplotlib's about a glyph
    a name holds) have the control characters of each of their lines escaped."""
    import warnings

    original = warnings.formatwarning

    def formatwarning(message, category, filename, lineno, line=None):
        text = original(message, category, filename, lineno, line)
        return "\n".join(printable(part) for part in text.split("\n"))

    warnings.formatwarning = formatwarning
    try:
        yield
    finally:
        warnings.formatwarning = original


def plot_text(text) -> str:
    r"""A name as a matplotlib label: :func:`printable`, and ``$`` escaped so that a name such as
    ``$x^$`` is drawn as it is rather than parsed as mathtext (which fails on it).

    >>> plot_text("cost $5\n")
    'cost \\$5\\n'
    """
    return printable(text).replace("$", r"\$")


_IMAGE_SIZE = re.compile(r"image_size=\((\d+|W), ?(\d+|H)\)")


def cli_spelling(text) -> str:
    """A library message as the command line says it: ``image_size=(64, 48)`` (the API's
    spelling, which library messages use) becomes ``--image-size 64x48``, and
    ``image_size=(W, H)`` ``--image-size WxH``.

    >>> cli_spelling("pass image_size=(64, 48) to resize them")
    'pass --image-size 64x48 to resize them'
    >>> cli_spelling("image_size=(W, H) chooses another size")
    '--image-size WxH chooses another size'
    """
    return _IMAGE_SIZE.sub(r"--image-size \1x\2", str(text))
