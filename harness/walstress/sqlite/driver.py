"""One small interface over the two Python bindings of SQLite.

``stdlib`` is the interpreter's ``sqlite3`` module (whatever library it links);
``apsw`` is whichever apsw is first on ``sys.path`` (a worker started for a
given SQLite version has that version's apsw first).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Sequence, cast

if TYPE_CHECKING:
    import sqlite3

    import apsw

ERROR_CLASSES = ("busy", "locked", "corrupt", "ioerr", "other")

# Primary result codes (the low byte of an extended code).
_SQLITE_BUSY = 5
_SQLITE_LOCKED = 6
_SQLITE_IOERR = 10
_SQLITE_CORRUPT = 11
_SQLITE_NOTADB = 26

_MESSAGE_CLASSES = (
    (re.compile(r"malformed|corrupt|not a database|file is encrypted", re.I), "corrupt"),
    (re.compile(r"database table is locked|database schema is locked", re.I), "locked"),
    (re.compile(r"database is locked|busy", re.I), "busy"),
    (re.compile(r"disk i/o error|ioerr|short read", re.I), "ioerr"),
)
_APSW_CLASSES = {
    "BusyError": "busy",
    "LockedError": "locked",
    "CorruptError": "corrupt",
    "NotADBError": "corrupt",
    "IOError": "ioerr",
}


def classify_error(exc: BaseException) -> str:
    """Map an exception raised by either binding to busy/locked/corrupt/ioerr/other."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None:
        code = getattr(exc, "result", None)  # apsw
    if isinstance(code, int):
        primary = code & 0xFF
        if primary == _SQLITE_BUSY:
            return "busy"
        if primary == _SQLITE_LOCKED:
            return "locked"
        if primary in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
            return "corrupt"
        if primary == _SQLITE_IOERR:
            return "ioerr"
    name = type(exc).__name__
    if name in _APSW_CLASSES:
        return _APSW_CLASSES[name]
    text = str(exc)
    for pattern, cls in _MESSAGE_CLASSES:
        if pattern.search(text):
            return cls
    return "other"


def is_sqlite_error(exc: BaseException) -> bool:
    module = type(exc).__module__ or ""
    return module.startswith("sqlite3") or module.startswith("apsw") or type(exc).__name__ in _APSW_CLASSES


class Connection:
    """A connection in autocommit mode; statements return lists of tuples."""

    def __init__(self, path: str, *, driver: str = "stdlib", busy_timeout_ms: int = 1000, readonly: bool = False,
                 vfs: str | None = None):
        self.driver = driver
        self.path = str(path)
        # sqlite3.Connection or apsw.Connection, as self.driver says; see _stdlib/_apsw.
        self._conn: sqlite3.Connection | apsw.Connection
        if driver == "stdlib":
            import sqlite3
            from urllib.parse import quote

            query = ["mode=ro"] if readonly else []
            if vfs:  # a VFS SQLite itself has (the unix family); Python VFSes need apsw
                query.append(f"vfs={vfs}")
            target = f"file:{quote(self.path)}?{'&'.join(query)}" if query else self.path
            self._conn = sqlite3.connect(
                target,
                timeout=busy_timeout_ms / 1000.0,
                isolation_level=None,
                check_same_thread=False,
                uri=bool(query),
            )
            self.sqlite_version = sqlite3.sqlite_version
            self._lastrowid: int | None = None
            self._rowcount = 0
        elif driver == "apsw":
            import apsw

            flags = apsw.SQLITE_OPEN_READONLY if readonly else apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE
            self._conn = apsw.Connection(self.path, flags=flags, vfs=vfs)
            self._apsw.setbusytimeout(int(busy_timeout_ms))
            self.sqlite_version = apsw.sqlite_lib_version()
        else:
            raise ValueError(f"unknown driver {driver!r}")

    @property
    def _stdlib(self) -> sqlite3.Connection:
        return cast("sqlite3.Connection", self._conn)

    @property
    def _apsw(self) -> apsw.Connection:
        return cast("apsw.Connection", self._conn)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        if self.driver == "stdlib":
            cursor = self._stdlib.execute(sql, params)
            rows = cursor.fetchall()
            self._lastrowid = cursor.lastrowid
            self._rowcount = cursor.rowcount
            return rows
        return [tuple(r) for r in self._apsw.cursor().execute(sql, params)]

    def execute_named(self, sql: str, params: Sequence[Any] = ()) -> tuple[list[str], list[tuple]]:
        """The rows and their column names (a RETURNING clause, a SELECT)."""
        if self.driver == "stdlib":
            cursor = self._stdlib.execute(sql, params)
            rows = cursor.fetchall()
            self._lastrowid = cursor.lastrowid
            self._rowcount = cursor.rowcount
            return [d[0] for d in cursor.description or ()], rows
        acursor = self._apsw.cursor().execute(sql, params)
        try:
            names = [d[0] for d in acursor.getdescription()]
        except Exception:  # apsw: a statement that returned no rows has no description
            names = []
        return names, [tuple(r) for r in acursor]

    @property
    def native(self) -> Any:
        """The binding's own connection object (sqlite3.Connection or apsw.Connection)."""
        return self._conn

    def scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        rows = self.execute(sql, params)
        return rows[0][0] if rows and rows[0] else None

    def executescript(self, sql: str) -> None:
        if self.driver == "stdlib":
            self._stdlib.executescript(sql)
        else:
            self._apsw.cursor().execute(sql)

    @property
    def lastrowid(self) -> int:
        if self.driver == "stdlib":
            if self._lastrowid is None:
                raise TypeError("no statement has run on this connection yet")
            return int(self._lastrowid)
        return int(self._apsw.last_insert_rowid())

    def changes(self) -> int:
        if self.driver == "stdlib":
            return int(self._rowcount)
        return int(self._apsw.changes())

    @property
    def in_transaction(self) -> bool:
        if self.driver == "stdlib":
            return bool(self._stdlib.in_transaction)
        return not self._apsw.getautocommit()

    def rollback_quietly(self) -> None:
        try:
            if self.in_transaction:
                self.execute("ROLLBACK")
        except Exception:
            pass

    def checkpoint(self, mode: str) -> tuple[int, int, int]:
        row = self.execute(f"PRAGMA wal_checkpoint({mode})")
        busy, log, done = row[0]
        return int(busy), int(log), int(done)

    def close(self) -> None:
        try:
            self._conn.close()
        except Exception:
            pass

    def __enter__(self) -> "Connection":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def connect(path: str, *, driver: str = "stdlib", busy_timeout_ms: int = 1000, readonly: bool = False,
            vfs: str | None = None) -> Connection:
    return Connection(path, driver=driver, busy_timeout_ms=busy_timeout_ms, readonly=readonly, vfs=vfs)


def library_info(driver: str = "stdlib") -> dict:
    """The SQLite library this process loads through the driver."""
    if driver == "stdlib":
        import sqlite3

        conn = sqlite3.connect(":memory:")
        try:
            options = [r[0] for r in conn.execute("PRAGMA compile_options")]
        finally:
            conn.close()
        return {
            "driver": "stdlib",
            "sqlite_version": sqlite3.sqlite_version,
            "module_version": "sqlite3 (Python stdlib)",
            "module_path": getattr(sqlite3, "__file__", ""),
            "compile_options": options,
        }
    import apsw

    aconn = apsw.Connection(":memory:")
    try:
        options = [r[0] for r in aconn.cursor().execute("PRAGMA compile_options")]
    finally:
        aconn.close()
    return {
        "driver": "apsw",
        "sqlite_version": apsw.sqlite_lib_version(),
        "module_version": apsw.apsw_version(),
        "module_path": getattr(apsw, "__file__", ""),
        "compile_options": options,
    }
