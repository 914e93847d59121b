"""The exceptions that reading a damaged ``.npy`` / ``.npz`` / gzip file can raise.

NumPy's and the standard library's parsers report a damaged file in many ways: a
truncated zip (``zipfile.BadZipFile``, ``EOFError``), a bad deflate stream
(``zlib.error``), a garbled ``.npy`` header (``ValueError``, ``SyntaxError``,
``tokenize.TokenError``, ``UnicodeDecodeError``), a header declaring an absurd shape
(``MemoryError``, ``OverflowError``), ... Every file reader of geomkfac catches
:data:`PARSE_ERRORS` at its boundary and turns them into one
:class:`~geomkfac.errors.GeomKFACError` naming the file.

>>> import io, numpy as np
>>> try:
...     np.lib.format.read_array(io.BytesIO(b"\\x93NUMPY\\x01\\x00\\x02\\x00{["), allow_pickle=False)
... except PARSE_ERRORS as exc:
...     print("caught", type(exc).__name__)
caught TokenError
"""

from __future__ import annotations

import struct
import tokenize
import zipfile
import zlib

__all__ = ["PARSE_ERRORS"]

#: what parsing a damaged file may raise (caught at each reader's boundary, never elsewhere)
PARSE_ERRORS = (
    OSError,
    EOFError,
    ValueError,  # includes UnicodeDecodeError and json.JSONDecodeError
    KeyError,
    IndexError,
    TypeError,
    OverflowError,
    MemoryError,
    RecursionError,
    SyntaxError,
    NotImplementedError,  # e.g. an unsupported zip compression method
    RuntimeError,  # e.g. an encrypted zip member
    struct.error,
    tokenize.TokenError,
    zipfile.BadZipFile,
    zlib.error,
)
