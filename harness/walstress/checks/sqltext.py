"""Text from a damaged database: error messages and values that are not valid UTF-8.

SQLite's error messages quote the damaged schema ("malformed database
schema (<name>)") and its values are whatever bytes the pages hold. The
sqlite3 module decodes both strictly: a message it cannot decode surfaces as
a ``UnicodeDecodeError`` instead of the ``sqlite3.Error`` it was, and a value
as an ``OperationalError``. Every check catches ``DB_ERRORS`` and reads
messages with :func:`error_text`; connections read values with
:func:`tolerant` (invalid bytes become U+FFFD; valid text reads the same).
"""

from __future__ import annotations

import sqlite3

__all__ = ["DB_ERRORS", "error_text", "tolerant", "tolerant_text"]

# ValueError: the UnicodeDecodeError of a message or value that is not UTF-8 (and "embedded null")
DB_ERRORS = (sqlite3.Error, ValueError)


def error_text(exc: BaseException) -> str:
    """The message of an SQLite error, also when its bytes were not valid UTF-8."""
    if isinstance(exc, UnicodeDecodeError) and isinstance(exc.object, (bytes, bytearray)):
        return bytes(exc.object).decode("utf-8", "replace")
    if isinstance(exc, sqlite3.Error) and not exc.args:
        # Python 3.10's sqlite3 drops a message it cannot decode and raises the error with no text
        # (SQLite itself never gives an empty message)
        return f"{type(exc).__name__} (SQLite's message was not valid UTF-8, and this Python drops it)"
    return str(exc) or type(exc).__name__


def tolerant_text(data: bytes) -> str:
    return data.decode("utf-8", "replace")


def tolerant(conn: sqlite3.Connection) -> sqlite3.Connection:
    """``conn``, reading text that is not valid UTF-8 with replacement characters."""
    conn.text_factory = tolerant_text
    return conn
