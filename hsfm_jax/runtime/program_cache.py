"""Compiled programs kept on disk across processes: a rerun skips tracing, lowering and compiling.

JAX's persistent compilation cache (`experiments.cli`) skips XLA's compilation on a rerun, but
each process still traces and lowers every program to find it there. On the main job's small
problems that is most of the time: DFR's first call in a process took 1.7 s with the cache warm,
of which 0.1 s was running it. `jit` is `jax.jit` plus, once `enable`d, a directory of compiled
executables (`jax.experimental.serialize_executable`) keyed by everything that determines the
program:

- the function (module and qualified name) and the source of every hsfm_jax module;
- the static arguments' reprs;
- the other arguments' tree structure and abstract values (shape, dtype, weak type);
- the jax, jaxlib, flax and optax versions, and the device and host CPU (XLA:CPU code is built
  for the host's instruction set).

A later process with the same key loads the executable and runs it (DFR: 0.3 s in all).
Whatever cannot be keyed safely goes to plain `jax.jit`: calls made while tracing (a nested
jit), a static argument passed positionally or whose repr holds a memory address (a function),
leaves that are not arrays or Python scalars, more than one device or process. A new entry's
first run in a later process is waited for and checked once; an entry that fails to load or to
run is logged, removed and rebuilt. Off until `enable` (the entry points turn it on
with the compilation cache; the tests run without it).

Entries are unpickled, which runs code, so only entries this cache wrote are loaded: each entry
starts with an HMAC-SHA256 of its bytes under the cache's own key (``.key``, 32 random bytes,
mode 0600, made on first use). An entry whose HMAC does not match (written by someone else, or
damaged) is removed and rebuilt, never unpickled; a key file that another user owns or that
others can read or write turns the program cache off with a warning.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import hmac
import inspect
import logging as py_logging
import os
import pickle
import secrets
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
from absl import logging

from hsfm_jax.runtime.atomic import atomic_write

_PACKAGE = Path(__file__).resolve().parents[1]
_directory: Path | None = None
_key: bytes | None = None
_KEY_FILE = ".key"
_MAGIC = b"hsfm_jax program v1\n"


class _Uncacheable(Exception):
    """A call that plain `jax.jit` handles (see the module docstring)."""


def enable(directory: str | os.PathLike) -> Path:
    """Keeps compiled programs under `directory` from now on (created when missing)."""
    global _directory, _key
    path = Path(directory).expanduser().absolute()
    path.mkdir(parents=True, exist_ok=True)
    _key = _read_or_make_key(path)
    _directory = path if _key is not None else None
    return path


def _read_or_make_key(directory: Path) -> bytes | None:
    """The cache's HMAC key (made on first use, 0600), or None when the key file cannot be
    trusted (another owner, readable or writable by others)."""
    key_file = directory / _KEY_FILE
    if not key_file.exists():
        tmp = directory / f".tmp-key-{os.getpid()}-{secrets.token_hex(4)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(32))
        with contextlib.suppress(FileExistsError):  # another process made it first
            os.link(tmp, key_file)
        tmp.unlink()
    info = key_file.stat()
    if info.st_uid != os.getuid() or info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        logging.warning(
            "program cache: %s is not this user's private key (owner %d, mode %o); the program "
            "cache is off",
            key_file,
            info.st_uid,
            info.st_mode & 0o777,
        )
        return None
    return key_file.read_bytes()


def _sign(blob: bytes) -> bytes:
    return _MAGIC + hmac.new(_key, blob, hashlib.sha256).digest() + blob


def _verified(data: bytes) -> bytes | None:
    """The blob of a signed entry, or None when its HMAC does not match this cache's key."""
    if _key is None or not data.startswith(_MAGIC):
        return None
    mac, blob = data[len(_MAGIC) : len(_MAGIC) + 32], data[len(_MAGIC) + 32 :]
    return blob if hmac.compare_digest(mac, hmac.new(_key, blob, hashlib.sha256).digest()) else None


def disable() -> None:
    """Back to plain `jax.jit` (programs already loaded in this process stay in memory)."""
    global _directory, _key
    _directory = None
    _key = None


def directory() -> Path | None:
    """Where programs are kept, or None when off."""
    return _directory


@functools.cache
def _environment() -> str:
    """The package source and everything outside the call that changes a compiled program."""
    import flax
    import jaxlib
    import optax
    from jax.extend import backend

    digest = hashlib.sha256()
    for path in sorted(_PACKAGE.rglob("*.py")):
        digest.update(str(path.relative_to(_PACKAGE)).encode())
        digest.update(path.read_bytes())
    device = jax.devices()[0]
    parts = [
        digest.hexdigest(),
        jax.__version__,
        jaxlib.__version__,
        flax.__version__,
        optax.__version__,
        device.platform,
        device.device_kind,
        backend.get_backend().platform_version,
        _host_cpu(),
        str(jax.config.jax_enable_x64),
        str(jax.config.jax_default_matmul_precision),
    ]
    return "\n".join(parts)


def _host_cpu() -> str:
    """The host CPU's model and feature flags (Linux), else the platform's machine name."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        lines = cpuinfo.read_text().splitlines()
        wanted = ("model name", "flags", "Features", "CPU part")
        return "\n".join(sorted({line for line in lines if line.startswith(wanted)}))
    import platform

    return platform.machine()


def _leaf(x) -> str:
    if isinstance(x, jax.core.Tracer):
        raise _Uncacheable("called while tracing")
    if not isinstance(x, (jax.Array, bool, int, float)) and not hasattr(x, "__array__"):
        raise _Uncacheable(f"a {type(x).__name__} argument")
    return str(jax.typeof(x))


class Program:
    """`jax.jit(fun, static_argnames=...)` whose executables are kept on disk when enabled.

    Attributes of the underlying jitted function (``lower``, ``_cache_size``, ...) are reachable
    on this object.
    """

    def __init__(self, fun: Callable, static_argnames: tuple[str, ...] = ()):
        functools.update_wrapper(self, fun)
        self._fun = fun
        self._static = tuple(static_argnames)
        self._jitted = jax.jit(fun, static_argnames=self._static)
        names = list(inspect.signature(fun).parameters)
        self._static_positions = {names.index(n) for n in self._static if n in names}
        self._loaded: dict[Path, Any] = {}  # entry path -> executable, in this process

    def __getattr__(self, name):
        return getattr(self._jitted, name)

    def __call__(self, *args, **kwargs):
        if _directory is None:
            return self._jitted(*args, **kwargs)
        try:
            key, dynamic = self._key(args, kwargs)
        except _Uncacheable:
            return self._jitted(*args, **kwargs)
        # An entry is written as <name>.new.pkl; the first process to load it waits for its
        # first run, and renames it <name>.pkl once that run succeeded (one that fails is
        # rebuilt). Later processes load <name>.pkl without waiting.
        path = _directory / f"{self._fun.__qualname__}-{key[:32]}.pkl"
        trial = path.with_suffix(".new.pkl")
        executable, ran = self._loaded.get(path) or self._load(path), False
        if executable is None and (candidate := self._load(trial)) is not None:
            ran, out = self._first_run(candidate, trial, path, args, dynamic)
            executable = candidate if ran else None
        if executable is None:
            executable = self._build(trial, args, kwargs)
        self._loaded[path] = executable
        return out if ran else executable(*args, **dynamic)

    def _first_run(self, executable, trial: Path, path: Path, args, dynamic) -> tuple[bool, Any]:
        """(True, output) of a new entry's first run, waited for, once `trial` is renamed to
        `path`; (False, None) when the run fails, `trial` removed."""
        try:
            out = jax.block_until_ready(executable(*args, **dynamic))
        except jax.errors.JaxRuntimeError as error:
            logging.warning("program cache: %s failed to run (%s); rebuilding it", trial, error)
            trial.unlink(missing_ok=True)
            return False, None
        with contextlib.suppress(FileNotFoundError):  # another process renamed it
            os.replace(trial, path)
        return True, out

    def _key(self, args, kwargs) -> tuple[str, dict]:
        if jax.device_count() > 1 or jax.process_count() > 1:
            raise _Uncacheable("more than one device")
        if any(i < len(args) for i in self._static_positions):
            raise _Uncacheable("a static argument passed by position")
        static = {k: v for k, v in kwargs.items() if k in self._static}
        dynamic = {k: v for k, v in kwargs.items() if k not in self._static}
        static_repr = repr(sorted(static.items()))
        if " at 0x" in static_repr:
            raise _Uncacheable("a static argument without a stable repr")
        leaves, tree = jax.tree_util.tree_flatten((args, dynamic))
        text = "\n".join(
            [
                _environment(),
                f"{self._fun.__module__}.{self._fun.__qualname__}",
                static_repr,
                str(tree),
                *map(_leaf, leaves),
            ]
        )
        return hashlib.sha256(text.encode()).hexdigest(), dynamic

    def _load(self, path: Path):
        from jax.experimental import serialize_executable

        if not path.is_file():
            return None
        blob = _verified(path.read_bytes())
        if blob is None:
            logging.warning("program cache: %s not signed by this cache; removing it", path)
            path.unlink(missing_ok=True)
            return None
        try:
            payload, in_tree, out_tree = pickle.loads(blob)
            executable = serialize_executable.deserialize_and_load(payload, in_tree, out_tree)
        except Exception as error:  # noqa: BLE001 - any unreadable entry is rebuilt
            logging.warning("program cache: %s unreadable (%s); rebuilding it", path, error)
            path.unlink(missing_ok=True)
            return None
        return executable

    def _build(self, path: Path, args, kwargs):
        from jax.experimental import serialize_executable

        executable, fresh = _compile_fresh(self._jitted.lower(*args, **kwargs))
        try:
            if not fresh:
                raise RuntimeError("JAX's compilation cache answered the compile")
            blob = pickle.dumps(serialize_executable.serialize(executable))
        except Exception as error:  # noqa: BLE001 - run it all the same, uncached
            logging.warning("program cache: %s not kept (%s)", self._fun.__qualname__, error)
        else:
            with atomic_write(path, "wb") as f:
                f.write(_sign(blob))
        return executable


_cache_hits = 0


def _count_cache_hit(event: str, **_) -> None:
    global _cache_hits
    if event == "/jax/compilation_cache/cache_hits":
        _cache_hits += 1


jax.monitoring.register_event_listener(_count_cache_hit)


def _compile_fresh(lowered) -> tuple[Any, bool]:
    """(`lowered.compile()` with JAX's compilation cache off, whether it was compiled here).

    On XLA:CPU an executable fetched from that cache serializes without its kernels' code, and
    the copy loaded by the next process fails when run ("Function ... not found";
    tests/runtime/test_program_cache.py). The cache's on/off state is memoized per process, so it is
    reset around the switch; the hit counter checks that no hit got through all the same.
    """
    from jax.experimental.compilation_cache import compilation_cache

    enabled, hits = jax.config.jax_enable_compilation_cache, _cache_hits
    jax.config.update("jax_enable_compilation_cache", False)
    _reset_quietly(compilation_cache)
    try:
        executable = lowered.compile()
    finally:
        jax.config.update("jax_enable_compilation_cache", enabled)
        _reset_quietly(compilation_cache)
    return executable, _cache_hits == hits


def _reset_quietly(compilation_cache) -> None:
    """`reset_cache` without its INFO line ("Resetting cache at ..."), which every program built
    here would otherwise add to the log twice."""
    logger = py_logging.getLogger("jax._src.compilation_cache")
    level = logger.level
    logger.setLevel(py_logging.WARNING)
    try:
        compilation_cache.reset_cache()
    finally:
        logger.setLevel(level)


def jit(fun: Callable | None = None, *, static_argnames: tuple[str, ...] = ()):
    """`Program` as a decorator: ``@program_cache.jit`` or ``@program_cache.jit(static_argnames=...)``."""
    if fun is None:
        return functools.partial(jit, static_argnames=static_argnames)
    return Program(fun, static_argnames)
