"""A throwaway PostgreSQL server started from the machine's own binaries.

Tests, benchmarks and the ``demo`` command need a real PostgreSQL, and none of them may rely on
one already running. :class:`LocalPostgres` runs ``initdb`` in a scratch folder, starts
``postgres`` on ``127.0.0.1`` (and a unix socket inside the data folder), waits until it accepts
connections, and stops and removes everything afterwards::

    with LocalPostgres(fast=True) as pg:
        pg.create_database("app")
        run_tests(pg.dsn_for("app"))

The API is synchronous (plain ``subprocess``) so sync pytest fixtures can use it directly; async
code calls it through ``asyncio.to_thread``.

Safety nets against orphaned servers, because a crashed test run must not leave postgres behind:

- the server runs in its own session/process group, so a Ctrl-C aimed at pytest does not shut
  it down under a test that is still cleaning up;
- stop() escalates smart -> fast -> immediate -> SIGKILL on timeouts, so it always returns with
  no server left;
- an ``atexit`` hook stops (immediate mode) every server still running when the interpreter
  exits, and removes the folders this module created;
- on Linux the postmaster asks the kernel for SIGQUIT (immediate shutdown) when its parent dies
  (``PR_SET_PDEATHSIG``), which also covers SIGKILL/SIGTERM of the parent, where ``atexit``
  never runs. The kernel ties this to the *thread* that started the server: start it from a
  thread that lives as long as you need the server (the main thread, or ``asyncio.to_thread``
  whose default-executor threads live until the loop shuts down), or pass
  ``die_with_parent=False``.

PostgreSQL refuses to run as root. When this process is root, ``initdb`` and ``postgres`` run as
the ``postgres`` system user (``OUTBOX_PG_USER`` or ``run_as`` to pick another), and the scratch
folder is handed to that user.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import ctypes.util
import functools
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Literal, Self

import psycopg
import structlog
from psycopg import sql

from outbox_relay.errors import EmbeddedServerError

__all__ = [
    "BINDIR_ENV",
    "DEFAULT_SEARCH_GLOBS",
    "FAST_SETTINGS",
    "RUN_AS_ENV",
    "TMPDIR_ENV",
    "LocalPostgres",
    "StopMode",
    "create_database",
    "default_parent_dir",
    "drop_database",
    "dsn_with_database",
    "find_pg_bindir",
    "free_port",
]

log = structlog.get_logger(__name__)

BINDIR_ENV: Final = "OUTBOX_PG_BINDIR"
RUN_AS_ENV: Final = "OUTBOX_PG_USER"
TMPDIR_ENV: Final = "OUTBOX_PG_TMPDIR"

StopMode = Literal["smart", "fast", "immediate"]

# The signals pg_ctl itself sends for each shutdown mode (see the PostgreSQL "Shutting Down the
# Server" docs). Signalling the postmaster we started ourselves avoids pg_ctl's polling and keeps
# a Popen handle to reap.
_STOP_SIGNALS: Final[dict[str, signal.Signals]] = {
    "smart": signal.SIGTERM,
    "fast": signal.SIGINT,
    "immediate": signal.SIGQUIT,
}

# Durability off: a test database is thrown away, and these make commits and checkpoints cheap.
FAST_SETTINGS: Final[Mapping[str, str]] = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    # Dynamic shared memory as files in the data folder (pg_dynshmem/) instead of POSIX
    # segments in /dev/shm: a SIGKILLed server then leaks nothing once its folder is removed,
    # while a POSIX segment would stay in /dev/shm (RAM) until reboot.
    "dynamic_shared_memory_type": "mmap",
}

# Applied in both presets. Tests and benchmarks open many pools side by side; the stock 100 is
# reached quickly. Everything else stays at PostgreSQL's (realistic) defaults unless overridden.
_BASE_SETTINGS: Final[Mapping[str, str]] = {
    "max_connections": "200",
}

# Candidate folders when neither the env override nor pg_config answers: Debian/Ubuntu, then the
# PGDG RPM layout. The highest version wins.
DEFAULT_SEARCH_GLOBS: Final[tuple[str, ...]] = (
    "/usr/lib/postgresql/*/bin",
    "/usr/pgsql-*/bin",
)

_REQUIRED_BINARIES: Final = ("initdb", "postgres")
_SETTING_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")
# sun_path is 108 bytes on Linux (104 on macOS); leave room for the terminating NUL.
_MAX_SOCKET_PATH: Final = 100
_CONF_FILE: Final = "outbox_embedded.conf"
_TEMP_PREFIX: Final = "outbox-pg-"
_OWNER_FILE: Final = "owner"
_LOG_FILE: Final = "embedded-postgres.log"
_PR_SET_PDEATHSIG: Final = 1
_PORT_ATTEMPTS: Final = 3
# tmpfs for fast (test) clusters only when it has room to spare: Docker's default /dev/shm is
# 64 MB, less than a cluster with a few databases.
_SHM: Final = Path("/dev/shm")
_SHM_MIN_FREE: Final = 1 << 30

_INSTALL_HINT: Final = (
    "Install the PostgreSQL server binaries (Debian/Ubuntu: `apt-get install postgresql`; "
    "Fedora/RHEL: `dnf install postgresql-server`; macOS: `brew install postgresql@15`), "
    f"or set {BINDIR_ENV} to the folder holding initdb and postgres "
    "(e.g. /usr/lib/postgresql/15/bin)."
)


# --------------------------------------------------------------------------------------------
# Finding the binaries
# --------------------------------------------------------------------------------------------


def _has_binaries(folder: Path) -> bool:
    return all(os.access(folder / name, os.X_OK) for name in _REQUIRED_BINARIES)


def _version_key(folder: Path) -> tuple[int, ...]:
    """Orders ``/usr/lib/postgresql/9.6/bin`` < ``.../15/bin`` numerically, not as strings."""
    match = re.search(r"(\d+(?:\.\d+)*)", folder.parent.name)
    if match is None:
        return (-1,)
    return tuple(int(part) for part in match.group(1).split("."))


def find_pg_bindir(
    env: Mapping[str, str] | None = None,
    search_globs: Sequence[str] = DEFAULT_SEARCH_GLOBS,
) -> Path:
    """Returns the folder holding ``initdb`` and ``postgres``.

    Order: ``$OUTBOX_PG_BINDIR`` (trusted as given: a wrong override is an error, not a hint to
    look elsewhere), then ``pg_config --bindir`` if ``pg_config`` is on PATH, then ``initdb`` on
    PATH, then the highest version matching ``search_globs``.

    Raises:
        EmbeddedServerError: nothing found; the message says how to install the binaries.
    """
    env = os.environ if env is None else env
    override = env.get(BINDIR_ENV)
    if override:
        folder = Path(override).expanduser()
        if not _has_binaries(folder):
            raise EmbeddedServerError(
                f"{BINDIR_ENV}={override} does not contain executable initdb and postgres. "
                + _INSTALL_HINT
            )
        return folder

    path = env.get("PATH", "")
    pg_config = shutil.which("pg_config", path=path)
    if pg_config is not None:
        # On Debian, libpq-dev alone ships a pg_config whose bindir holds no server, so the
        # answer is checked rather than trusted.
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            answer = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()
            if answer and _has_binaries(Path(answer)):
                return Path(answer)

    initdb = shutil.which("initdb", path=path)
    if initdb is not None:
        folder = Path(initdb).resolve().parent
        if _has_binaries(folder):
            return folder

    candidates: list[Path] = []
    for pattern in search_globs:
        root = Path(pattern).anchor or "/"
        candidates.extend(
            p for p in Path(root).glob(pattern[len(root) :]) if p.is_dir() and _has_binaries(p)
        )
    if candidates:
        return max(candidates, key=_version_key)

    raise EmbeddedServerError(
        "PostgreSQL server binaries (initdb, postgres) not found: "
        f"{BINDIR_ENV} is not set, no usable pg_config or initdb on PATH, "
        f"nothing in {', '.join(search_globs)}. " + _INSTALL_HINT
    )


def default_parent_dir(fast: bool) -> Path:
    """Where temporary data folders go: ``$OUTBOX_PG_TMPDIR``, else (for ``fast`` clusters)
    ``/dev/shm`` when it has at least 1 GiB free, else the system temp folder.

    On a VM disk, initdb plus start took 0.8-1.1 s and a template clone 70-80 ms; on tmpfs
    0.47 s and 12-21 ms. Durable clusters (``fast=False``) stay on disk, where their numbers
    mean something.
    """
    override = os.environ.get(TMPDIR_ENV)
    if override:
        return Path(override)
    if fast and _SHM.is_dir() and os.access(_SHM, os.W_OK | os.X_OK):
        with contextlib.suppress(OSError):
            usage = os.statvfs(_SHM)
            if usage.f_bavail * usage.f_frsize >= _SHM_MIN_FREE:
                return _SHM
    return Path(tempfile.gettempdir())


def _socket_parent() -> str:
    """Where a socket folder goes when the data folder's path is too long for a socket.

    The temporary folder (``TMPDIR``: a test session's own, say, so it sees and removes what is
    left) when a socket path in it fits, else ``/tmp``.
    """
    parent = tempfile.gettempdir()
    if len(str(Path(parent) / "opg-xxxxxxxx" / ".s.PGSQL.65535")) <= _MAX_SOCKET_PATH:
        return parent
    return "/tmp"


def _owner_stamp() -> str:
    return f"{os.getpid()} {socket.gethostname()}\n"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _sweep_stale(parent: Path) -> None:
    """Removes temporary clusters left by runs that died without cleaning up.

    A SIGKILLed test run leaves its folder behind (the server itself dies with its owner), and
    on tmpfs that is memory. A folder goes only when its owner file names a process of this
    host that is gone and no live postmaster uses it; folders without an owner file are
    still being made, or not ours to judge.
    """
    host = socket.gethostname()
    with contextlib.suppress(OSError):
        for base in parent.glob(_TEMP_PREFIX + "*"):
            try:
                pid_text, owner_host = (base / _OWNER_FILE).read_text().split()
                owner = int(pid_text)
            except (OSError, ValueError):
                continue
            # Another host (a container sharing the folder) has its own pid numbers.
            if owner_host != host or _pid_alive(owner):
                continue
            try:
                postmaster = int((base / "data" / "postmaster.pid").read_text().split()[0])
            except (OSError, ValueError, IndexError):
                postmaster = None
            if postmaster is not None and _pid_alive(postmaster):
                continue
            shutil.rmtree(base, ignore_errors=True)
            log.info("embedded_postgres_stale_removed", folder=str(base), owner_pid=owner)


# --------------------------------------------------------------------------------------------
# Database helpers (work against any server, embedded or not)
# --------------------------------------------------------------------------------------------


def dsn_with_database(dsn: str, dbname: str) -> str:
    """Returns ``dsn`` (a ``postgresql://`` URL) pointing at database ``dbname`` instead.

    Only URLs are accepted because asyncpg, the relay's driver, only takes URLs.
    """
    parts = urllib.parse.urlsplit(dsn)
    if parts.scheme not in ("postgresql", "postgres"):
        raise EmbeddedServerError(
            f"expected a postgresql:// URL, got {parts.scheme or 'no scheme'!r}"
        )
    # A dbname= query parameter would override the path in libpq; drop it.
    query = urllib.parse.urlencode(
        [(k, v) for k, v in urllib.parse.parse_qsl(parts.query) if k != "dbname"]
    )
    path = "/" + urllib.parse.quote(dbname, safe="")
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, query, parts.fragment))


def create_database(
    admin_dsn: str,
    name: str,
    template: str | None = None,
    strategy: Literal["wal_log", "file_copy"] | None = None,
) -> None:
    """``CREATE DATABASE name [TEMPLATE template] [STRATEGY strategy]`` through ``admin_dsn``.

    ``strategy`` needs PostgreSQL 15+; leave it ``None`` for the server default.
    Identifiers are quoted by psycopg, never formatted into the SQL text.
    """
    statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template is not None:
        statement += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
    if strategy is not None:
        statement += sql.SQL(" STRATEGY {}").format(sql.Identifier(strategy))
    # CREATE/DROP DATABASE cannot run inside a transaction block: autocommit.
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(statement)


def drop_database(admin_dsn: str, name: str) -> None:
    """``DROP DATABASE IF EXISTS name WITH (FORCE)``: disconnects whoever is still connected."""
    statement = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(statement)


# --------------------------------------------------------------------------------------------
# Process plumbing
# --------------------------------------------------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the kernel's pick; racy by nature)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def _conf_quote(value: str) -> str:
    """postgresql.conf string literal: single quotes, embedded quotes doubled."""
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


@functools.cache
def _prctl() -> Callable[..., int] | None:
    """libc's prctl on Linux, looked up once in the parent (the forked child should do little)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        function: Callable[..., int] = ctypes.CDLL(ctypes.util.find_library("c")).prctl
    except (OSError, AttributeError):
        return None
    return function


def _parent_death_hook(parent_pid: int) -> Callable[[], None] | None:
    """A ``preexec_fn`` asking Linux to SIGQUIT the server (immediate shutdown) when its parent
    dies, or ``None`` where that is not available."""
    prctl = _prctl()
    if prctl is None:
        return None

    def hook() -> None:
        # Runs after setuid in the child, which matters: a credential change clears the setting.
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGQUIT), 0, 0, 0)
        if os.getppid() != parent_pid:
            # The parent died before the request took effect.
            os.kill(os.getpid(), signal.SIGKILL)

    return hook


# Servers that must be stopped when the interpreter exits; strong references on purpose, so a
# LocalPostgres dropped without stop() is still found.
_live: set[LocalPostgres] = set()
_live_lock = threading.Lock()
_owner_pid: Final = os.getpid()


@atexit.register
def _stop_all_at_exit() -> None:
    # A forked child inherits this hook and the set, but not the servers: leave them alone.
    if os.getpid() != _owner_pid:
        return
    with _live_lock:
        servers = list(_live)
    for server in servers:
        with contextlib.suppress(Exception):
            if server.is_running():
                log.warning(
                    "embedded_postgres_atexit_stop", port=server.port, data_dir=str(server.data_dir)
                )
                server.stop("immediate", timeout=10)
            server.cleanup()


# --------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------


class LocalPostgres:
    """One PostgreSQL server in a throwaway folder, owned by this process.

    Args:
        data_dir: where the cluster lives. ``None``: a fresh temporary folder (in
            ``parent_dir``), removed by :meth:`cleanup`. An existing cluster (``PG_VERSION``
            present) is reused as is and never removed; a missing or empty folder is
            initialised and removed by cleanup.
        port: TCP port on 127.0.0.1; ``None`` picks a free one (kept across restarts).
        fast: test preset (fsync, synchronous_commit and full_page_writes off).
            ``False`` keeps PostgreSQL's durable defaults, for benchmarks and the demo.
            Beware: with synchronous_commit off, ``stop("immediate")`` loses the commits of
            the last few hundred milliseconds (measured: hundreds of rows). A test that
            crashes the server and counts committed rows passes
            ``settings={"synchronous_commit": "on"}``; fsync off is harmless there, since
            the OS keeps what a killed process wrote.
        settings: extra server settings, written to an included config file; they win
            over the preset.
        bindir: folder of initdb/postgres; default :func:`find_pg_bindir`.
        run_as: OS user running the server when this process is root (default
            ``$OUTBOX_PG_USER`` or ``postgres``). Ignored when not root.
        locale: initdb ``--locale``; ``C`` is deterministic and exists everywhere.
        parent_dir: where a temporary data folder is made; default
            :func:`default_parent_dir` (tmpfs for fast clusters when roomy). When root, the
            server user must be able to traverse it.
        copy_from: a *stopped* cluster to copy instead of running initdb (about ten times
            faster than initdb; lets tests start many servers from one migrated snapshot).
        startup_timeout: seconds to wait for the server to accept connections.
        die_with_parent: Linux only; see the module docstring.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str] | None = None,
        *,
        port: int | None = None,
        fast: bool = False,
        settings: Mapping[str, str | int | float | bool] | None = None,
        bindir: str | os.PathLike[str] | None = None,
        run_as: str | None = None,
        locale: str = "C",
        startup_timeout: float = 30.0,
        die_with_parent: bool = True,
        copy_from: str | os.PathLike[str] | None = None,
        parent_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self._bindir = Path(bindir) if bindir is not None else find_pg_bindir()
        if not _has_binaries(self._bindir):
            raise EmbeddedServerError(
                f"{self._bindir} does not contain executable initdb and postgres. " + _INSTALL_HINT
            )
        self._requested_data_dir = Path(data_dir).resolve() if data_dir is not None else None
        self._port: int | None = port
        self._fast = fast
        self._settings = self._merge_settings(fast, settings or {})
        self._locale = locale
        self._startup_timeout = startup_timeout
        self._die_with_parent = die_with_parent
        self._copy_from = Path(copy_from).resolve() if copy_from is not None else None
        self._parent_dir = Path(parent_dir) if parent_dir is not None else None
        self._uid, self._gid, self._user = self._resolve_user(run_as)

        self._lock = threading.RLock()
        self._data_dir: Path | None = None
        self._remove_on_cleanup: list[Path] = []
        self._socket_dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    # -- configuration ------------------------------------------------------------------------

    @staticmethod
    def _merge_settings(
        fast: bool, extra: Mapping[str, str | int | float | bool]
    ) -> dict[str, str]:
        merged: dict[str, str] = dict(_BASE_SETTINGS)
        if fast:
            merged.update(FAST_SETTINGS)
        for name, value in extra.items():
            if not _SETTING_NAME.match(name):
                raise EmbeddedServerError(f"invalid PostgreSQL setting name: {name!r}")
            if isinstance(value, bool):
                merged[name] = "on" if value else "off"
            else:
                merged[name] = str(value)
        return merged

    @staticmethod
    def _resolve_user(run_as: str | None) -> tuple[int | None, int | None, str | None]:
        """(uid, gid, name) to drop to, or Nones when we are not root."""
        if os.geteuid() != 0:
            return None, None, None
        name = run_as or os.environ.get(RUN_AS_ENV) or "postgres"
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            raise EmbeddedServerError(
                f"running as root, and PostgreSQL refuses to run as root; the user {name!r} "
                f"meant to run it does not exist. Create it (`useradd --system --user-group "
                f"{name}`), set {RUN_AS_ENV} to an existing unprivileged user, or run as a "
                "non-root user."
            ) from None
        if entry.pw_uid == 0:
            raise EmbeddedServerError(
                f"{RUN_AS_ENV}={name} is root; PostgreSQL refuses to run as root"
            )
        return entry.pw_uid, entry.pw_gid, name

    # -- public properties --------------------------------------------------------------------

    @property
    def bindir(self) -> Path:
        """Folder of the PostgreSQL binaries in use."""
        return self._bindir

    @property
    def port(self) -> int:
        """TCP port on 127.0.0.1 (fixed at the first start, kept across restarts)."""
        if self._port is None:
            raise EmbeddedServerError("the server has no port yet: call start() first")
        return self._port

    @property
    def host(self) -> str:
        """Always ``127.0.0.1``: the server never listens on other interfaces."""
        return "127.0.0.1"

    @property
    def data_dir(self) -> Path:
        """The cluster's folder (``PGDATA``)."""
        if self._data_dir is None:
            raise EmbeddedServerError("the server has no data folder yet: call start() first")
        return self._data_dir

    @property
    def socket_dir(self) -> Path:
        """Folder of the unix socket (the data folder unless its path is too long)."""
        if self._socket_dir is None:
            raise EmbeddedServerError("the server has no socket yet: call start() first")
        return self._socket_dir

    @property
    def log_path(self) -> Path:
        """The server's stderr log (appended to across restarts)."""
        return self.data_dir / _LOG_FILE

    @property
    def pid(self) -> int | None:
        """The postmaster's pid while running."""
        with self._lock:
            return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    @property
    def settings(self) -> Mapping[str, str]:
        """The settings written to the server's config (preset plus overrides)."""
        return dict(self._settings)

    @property
    def dsn(self) -> str:
        """``postgresql://postgres@127.0.0.1:PORT/postgres``."""
        return self.dsn_for("postgres")

    def dsn_for(self, dbname: str) -> str:
        """The URL of database ``dbname`` on this server (superuser ``postgres``, trust auth)."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{urllib.parse.quote(dbname, safe='')}"

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> Self:
        """Initialises the cluster if needed, starts the server and waits until it is ready.

        Idempotent while running. Raises :class:`EmbeddedServerError` with the tail of the
        server log when it does not come up within ``startup_timeout``.
        """
        with self._lock:
            if self.is_running():
                return self
            began = time.monotonic()
            if self._data_dir is None:
                self._prepare_data_dir()
            data_dir = self.data_dir
            # A port we pick may be grabbed by someone else before postgres binds it: pick
            # again. A port given by the caller, or kept for a restart, must not change.
            fresh_port = self._port is None
            if self._port is None:
                self._port = free_port()
            port_attempts = 0
            waited_for_backends = False
            deadline = began + self._startup_timeout
            while True:
                try:
                    self._launch(deadline)
                    break
                except _PortTaken:
                    port_attempts += 1
                    if not fresh_port:
                        raise EmbeddedServerError(
                            f"port {self._port} on 127.0.0.1 is in use by another process "
                            "(a restart keeps the port it had); see " + str(self.log_path)
                        ) from None
                    log.warning(
                        "embedded_postgres_port_taken", port=self._port, attempt=port_attempts
                    )
                    if port_attempts == _PORT_ATTEMPTS:
                        raise EmbeddedServerError(
                            f"could not find a free port for PostgreSQL in {port_attempts} attempts"
                        ) from None
                    self._port = free_port()
                except _OldBackendsAlive as exc:
                    # After a postmaster was SIGKILLed, its orphaned backends keep the shared
                    # memory until they notice; a busy one may take a moment. Wait for them.
                    if time.monotonic() >= deadline:
                        raise EmbeddedServerError(
                            "backends of a previous, killed server still hold its shared "
                            f"memory after {self._startup_timeout}s:\n{exc}"
                        ) from None
                    if not waited_for_backends:
                        log.warning("embedded_postgres_old_backends_alive", port=self._port)
                        waited_for_backends = True
                    time.sleep(0.1)
            with _live_lock:
                _live.add(self)
            log.info(
                "embedded_postgres_started",
                port=self._port,
                data_dir=str(data_dir),
                pid=self.pid,
                fast=self._fast,
                seconds=round(time.monotonic() - began, 3),
            )
            return self

    def stop(self, mode: StopMode = "fast", timeout: float = 30.0) -> None:
        """Shuts the server down; a no-op when it is not running.

        ``smart`` waits for clients to disconnect, ``fast`` disconnects them and checkpoints,
        ``immediate`` exits without a checkpoint (crash recovery on the next start). A mode
        that does not finish within ``timeout`` escalates to the next, then to SIGKILL of the
        whole process group, so stop() always returns with no server left.
        """
        if mode not in _STOP_SIGNALS:
            raise ValueError(f"mode must be one of {sorted(_STOP_SIGNALS)}, got {mode!r}")
        with self._lock:
            proc = self._proc
            if proc is None:
                return
            began = time.monotonic()
            ladder: list[str] = ["smart", "fast", "immediate"]
            exited = proc.poll() is not None
            for step in ladder[ladder.index(mode) :]:
                if exited:
                    break
                if step != mode:
                    log.warning("embedded_postgres_stop_escalated", port=self._port, mode=step)
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(_STOP_SIGNALS[step])
                try:
                    proc.wait(timeout=timeout if step != "immediate" else min(timeout, 10.0))
                    exited = True
                except subprocess.TimeoutExpired:
                    continue
            # Only reached with a live postmaster when even immediate mode timed out.
            self._kill_hard(proc)
            if not exited:
                proc.wait()
            self._proc = None
            log.info(
                "embedded_postgres_stopped",
                port=self._port,
                mode=mode,
                returncode=proc.returncode,
                seconds=round(time.monotonic() - began, 3),
            )

    def kill(self) -> None:
        """SIGKILLs the postmaster alone, like a crash, and reaps it; for fault tests.

        Its backends are left to notice and exit on their own, as after a real crash; the next
        :meth:`start` waits for them and then runs crash recovery.
        """
        with self._lock:
            proc = self._proc
            if proc is None:
                return
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait()
            self._proc = None
            log.info("embedded_postgres_killed", port=self._port, pid=proc.pid)

    def restart(self, mode: StopMode = "fast") -> Self:
        """Stops (in ``mode``) and starts again on the same port with the same data."""
        with self._lock:
            self.stop(mode)
            return self.start()

    def is_running(self) -> bool:
        """Whether the postmaster we started is still alive (not whether it accepts queries)."""
        with self._lock:
            return self._proc is not None and self._proc.poll() is None

    def cleanup(self) -> None:
        """Stops the server (immediate) if needed and removes the folders this object created.

        A pre-existing cluster passed as ``data_dir`` is never removed.
        """
        with self._lock:
            if self._proc is not None:
                self.stop("immediate")
            for folder in self._remove_on_cleanup:
                shutil.rmtree(folder, ignore_errors=True)
                log.info("embedded_postgres_cleaned_up", folder=str(folder))
            self._remove_on_cleanup = []
            self._data_dir = None
            self._socket_dir = None
            with _live_lock:
                _live.discard(self)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self.stop("fast")
        finally:
            self.cleanup()

    def __repr__(self) -> str:
        state = "running" if self.is_running() else "stopped"
        return f"<LocalPostgres {state} port={self._port} data_dir={self._data_dir}>"

    # -- database helpers ---------------------------------------------------------------------

    def create_database(
        self,
        name: str,
        template: str | None = None,
        strategy: Literal["wal_log", "file_copy"] | None = None,
    ) -> str:
        """Creates database ``name`` (optionally cloned from ``template``); returns its DSN."""
        create_database(self.dsn, name, template=template, strategy=strategy)
        return self.dsn_for(name)

    def drop_database(self, name: str) -> None:
        """Drops database ``name`` if it exists, disconnecting its clients (``WITH (FORCE)``)."""
        drop_database(self.dsn, name)

    # -- internals ----------------------------------------------------------------------------

    def _chown(self, path: Path) -> None:
        if self._uid is not None and self._gid is not None:
            os.chown(path, self._uid, self._gid)

    def _prepare_data_dir(self) -> None:
        """Creates (or adopts) the data folder and runs initdb when it holds no cluster."""
        requested = self._requested_data_dir
        if requested is None:
            parent = self._parent_dir or default_parent_dir(self._fast)
            _sweep_stale(parent)
            # <parent>/outbox-pg-XXXX/{owner, data/}: the owner file sits outside the data
            # folder because initdb wants that one empty.
            base = Path(tempfile.mkdtemp(prefix=_TEMP_PREFIX, dir=parent))
            self._remove_on_cleanup.append(base)
            (base / _OWNER_FILE).write_text(_owner_stamp(), encoding="utf-8")
            # The server user must get through the (0700, ours) base to reach its data folder.
            base.chmod(0o711)
            data_dir = base / "data"
            data_dir.mkdir(mode=0o700)
        elif (requested / "PG_VERSION").exists():
            data_dir = requested
        else:
            if requested.exists() and any(requested.iterdir()):
                raise EmbeddedServerError(
                    f"{requested} is neither empty nor a PostgreSQL data folder (no PG_VERSION)"
                )
            if not requested.exists():
                requested.mkdir(parents=True)
            self._remove_on_cleanup.append(requested)
            data_dir = requested
        # Registered before initdb so a failure half-way still gets its folder removed at exit.
        with _live_lock:
            _live.add(self)

        if not (data_dir / "PG_VERSION").exists():
            # postgres refuses a data folder others can read; initdb fixes this, a copy not.
            data_dir.chmod(0o700)
            self._chown(data_dir)
            if self._copy_from is not None:
                self._copy_cluster(self._copy_from, data_dir)
            else:
                self._initdb(data_dir)
        # Only now: a start() retried after a failed initdb must not adopt a half-made folder.
        self._data_dir = data_dir

        socket_dir = data_dir
        if len(str(socket_dir / ".s.PGSQL.65535")) > _MAX_SOCKET_PATH:
            # A unix socket path longer than sun_path makes postgres fail to start.
            socket_dir = Path(tempfile.mkdtemp(prefix="opg-", dir=_socket_parent()))
            socket_dir.chmod(0o700)
            self._chown(socket_dir)
            self._remove_on_cleanup.append(socket_dir)
        self._socket_dir = socket_dir

        # Our settings live in their own file, rewritten at each start, so postgresql.conf is
        # touched once and the folder stays startable by hand (pg_ctl -D ...).
        conf = data_dir / "postgresql.conf"
        include = f"include_if_exists = '{_CONF_FILE}'"
        text = conf.read_text(encoding="utf-8")
        if include not in text:
            with conf.open("a", encoding="utf-8") as handle:
                handle.write(f"\n# Added by outbox_relay.testing.postgres\n{include}\n")

    def _copy_cluster(self, source: Path, data_dir: Path) -> None:
        """Copies a stopped cluster into the (empty, server-owned) ``data_dir``."""
        began = time.monotonic()
        if not (source / "PG_VERSION").exists():
            raise EmbeddedServerError(f"copy_from={source} is not a PostgreSQL data folder")
        if (source / "postmaster.pid").exists():
            # Copying the files of a running server gives a corrupt cluster.
            raise EmbeddedServerError(f"copy_from={source} is in use by a server: stop it first")
        # Copied here rather than by `cp -a` as the server user: no dependency on GNU cp
        # flags, and the ownership fix-up below is a cheap walk over ~1000 entries.
        try:
            shutil.copytree(source, data_dir, symlinks=True, dirs_exist_ok=True)
            if self._uid is not None and self._gid is not None:
                for root, dirs, files in os.walk(data_dir):
                    for name in (*dirs, *files):
                        os.lchown(os.path.join(root, name), self._uid, self._gid)
        except OSError as exc:
            raise EmbeddedServerError(
                f"copying the cluster {source} to {data_dir} failed: {exc}"
            ) from exc
        # The source's server log belongs to the source.
        (data_dir / _LOG_FILE).unlink(missing_ok=True)
        log.info(
            "embedded_postgres_copied",
            source=str(source),
            data_dir=str(data_dir),
            seconds=round(time.monotonic() - began, 3),
        )

    def _initdb(self, data_dir: Path) -> None:
        began = time.monotonic()
        command = [
            str(self._bindir / "initdb"),
            f"--pgdata={data_dir}",
            "--username=postgres",
            # trust for local and host lines; the server only listens on 127.0.0.1 and a socket
            # inside a 0700 folder, so nobody else can reach it.
            "--auth=trust",
            "--encoding=UTF8",
            f"--locale={self._locale}",
            # The cluster is disposable: skipping the final fsync saves most of initdb's time.
            "--no-sync",
        ]
        result = subprocess.run(
            command,
            capture_output=True,
            text=True,
            env=self._child_env(data_dir),
            cwd=data_dir,
            check=False,
            **self._user_kwargs(),
        )
        if result.returncode != 0:
            hint = ""
            if self._user is not None:
                hint = (
                    f" (running as root: initdb ran as {self._user!r}, who must be able to reach "
                    f"and own {data_dir}; every parent folder needs o+x)"
                )
            raise EmbeddedServerError(
                f"initdb failed with exit code {result.returncode}{hint}:\n"
                f"{result.stderr.strip() or result.stdout.strip()}"
            )
        log.info(
            "embedded_postgres_initdb",
            data_dir=str(data_dir),
            user=self._user,
            seconds=round(time.monotonic() - began, 3),
        )

    def _write_conf(self) -> None:
        settings: dict[str, str] = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": str(self.socket_dir),
            **self._settings,
        }
        lines = ["# Written by outbox_relay.testing.postgres at each start; edits are lost."]
        lines += [f"{name} = {_conf_quote(value)}" for name, value in settings.items()]
        path = self.data_dir / _CONF_FILE
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        self._chown(path)

    def _child_env(self, home: Path) -> dict[str, str]:
        # PG* variables from the caller's environment (PGDATA, PGPORT, PGOPTIONS...) must not
        # leak into a server that is configured entirely by us.
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        if self._user is not None:
            # root's HOME is unreadable for the server user.
            env["HOME"] = str(home)
            env["USER"] = env["LOGNAME"] = self._user
        return env

    def _user_kwargs(self) -> dict[str, Any]:
        if self._uid is None:
            return {}
        # extra_groups=[] drops root's supplementary groups along with the uid.
        return {"user": self._uid, "group": self._gid, "extra_groups": []}

    def _launch(self, deadline: float) -> None:
        """Starts the postmaster and waits for it; raises _PortTaken on a bind failure."""
        data_dir = self.data_dir
        if _port_in_use(self.host, self.port):
            raise _PortTaken
        self._write_conf()
        log_path = self.log_path
        log_offset = log_path.stat().st_size if log_path.exists() else 0
        with log_path.open("ab") as log_file:
            self._chown(log_path)
            self._proc = subprocess.Popen(
                [str(self._bindir / "postgres"), "-D", str(data_dir)],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=self._child_env(data_dir),
                cwd=data_dir,
                # Own session and process group: terminal signals (Ctrl-C) aimed at the test
                # run do not shut the server down under a test that is still cleaning up.
                start_new_session=True,
                preexec_fn=(_parent_death_hook(os.getpid()) if self._die_with_parent else None),
                **self._user_kwargs(),
            )
        try:
            self._wait_ready(log_path, log_offset, deadline)
        except BaseException:
            proc, self._proc = self._proc, None
            if proc is not None:
                self._kill_hard(proc)
                with contextlib.suppress(Exception):
                    proc.wait(timeout=10)
            raise

    def _wait_ready(self, log_path: Path, log_offset: int, deadline: float) -> None:
        """Polls with real connections until the server answers, it dies, or time runs out."""
        proc = self._proc
        assert proc is not None
        delay = 0.005
        last_error = "no attempt"
        while True:
            code = proc.poll()
            if code is not None:
                new_log = _read_from(log_path, log_offset)
                if "could not bind" in new_log or "Address already in use" in new_log:
                    raise _PortTaken
                if "pre-existing shared memory block" in new_log:
                    raise _OldBackendsAlive(_tail_text(new_log, 5))
                raise EmbeddedServerError(
                    f"postgres exited with code {code} during start-up; log {log_path}:\n"
                    + _tail_text(new_log)
                )
            try:
                # connect_timeout bounds a hung attempt; a refused one returns at once.
                with psycopg.connect(self.dsn, connect_timeout=2, autocommit=True):
                    return
            except psycopg.OperationalError as exc:
                last_error = str(exc).strip()
            if time.monotonic() >= deadline:
                raise EmbeddedServerError(
                    f"postgres did not accept connections within {self._startup_timeout}s "
                    f"(last error: {last_error}); log {log_path}:\n"
                    + _tail_text(_read_from(log_path, log_offset))
                )
            # Short, growing intervals: a polling loop, not a guessed sleep.
            time.sleep(delay)
            delay = min(delay * 2, 0.1)

    @staticmethod
    def _kill_hard(proc: subprocess.Popen[bytes]) -> None:
        """SIGKILLs a postmaster that is still alive, and its backends.

        Last resort only. Each PostgreSQL child calls setsid() itself, so killpg() of the
        postmaster's group does not reach the backends: they are listed (while still children
        of the postmaster) and killed one by one. Left alone they would exit anyway once they
        notice the postmaster is gone, but not necessarily before the next test wants the port.
        A postmaster that already exited has reaped its children; its pid may since have been
        reused, so nothing is signalled then.
        """
        if proc.poll() is not None:
            return
        children = _child_pids(proc.pid)
        for pid in (proc.pid, *children):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)


class _PortTaken(Exception):
    """Internal: the chosen port was taken before postgres could bind it."""


class _OldBackendsAlive(Exception):
    """Internal: orphans of a killed postmaster still hold the cluster's shared memory."""


def _child_pids(pid: int) -> list[int]:
    """Pids whose parent is ``pid`` (Linux /proc; empty elsewhere)."""
    found: list[int] = []
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError, ValueError, IndexError):
                stat = Path(entry.path, "stat").read_text()
                # Field 4 is the ppid; the command name (field 2) may hold spaces and parens.
                if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
    return found


def _read_from(path: Path, offset: int) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            return handle.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


def _tail_text(text: str, lines: int = 30) -> str:
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"
