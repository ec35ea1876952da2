"""Finding and loading plugins: entry points, a plugins directory, and what is switched off.

Order, so that a run's header and a name clash are the same on every machine:
the built-in plugins (entry points of oom-workbench itself), then third-party
entry points of the group "workbench" by entry-point name, then the files of
each plugins directory by file name, then plugin objects handed in by tests.
A plugin that cannot be imported, registered, or whose policies fail their
checks is set aside with the reason (Plugins.broken) and the others still
load; a config naming its policies then gets an unknown-policy error.

WORKBENCH_DISABLE_PLUGIN_AUTOLOAD=1 skips the third-party entry points (the
built-ins and explicit plugins directories still load), and a name in a
config's `disable` list skips that plugin, as pytest's
PYTEST_DISABLE_PLUGIN_AUTOLOAD and `-p no:NAME` do.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import sys
import types
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable

import pluggy

from workbench import hookspecs
from workbench.log import short_traceback
from workbench.registry import PluginError, PolicyRegistry, plugin_problems

PROJECT = "workbench"
DIST = "oom-workbench"
AUTOLOAD_ENV = "WORKBENCH_DISABLE_PLUGIN_AUTOLOAD"
LOCAL_PACKAGE = "workbench_local_plugins"   # where plugins-directory modules live in sys.modules


@dataclass(frozen=True)
class Origin:
    """Where a plugin came from."""

    kind: str                  # "built-in", "distribution", "file" or "object"
    dist: str = ""             # distribution name
    version: str = ""
    path: str = ""             # a plugins-directory file as given
    sha256: str = ""           # of that file, so a log says which version of it ran

    def __str__(self) -> str:
        if self.kind == "distribution":
            return f"{self.dist} {self.version}" if self.dist else self.path
        if self.kind == "file":
            return f"file {self.path}"
        return self.kind

    def to_json(self) -> dict[str, str]:
        return {k: v for k, v in vars(self).items() if v}


@dataclass
class Broken:
    """A plugin set aside at start-up."""

    name: str
    origin: Origin
    error: str
    traceback: str = ""

    def __str__(self) -> str:
        return f"plugin {self.name!r} ({self.origin}): {self.error}"


@dataclass
class Plugins:
    pm: pluggy.PluginManager
    registry: PolicyRegistry
    origins: dict[str, Origin] = field(default_factory=dict)   # plugin name -> origin
    broken: list[Broken] = field(default_factory=list)
    disabled: list[str] = field(default_factory=list)

    def describe(self) -> list[dict[str, str]]:
        """The registered plugins in a fixed order, for the log header."""
        out = []
        for name, plugin in sorted(self.pm.list_name_plugin(), key=lambda x: x[0]):
            module = getattr(plugin, "__name__", None) or type(plugin).__module__
            origin = self.origin_of(name)
            dist = f"{origin.dist} {origin.version}" if origin.dist else ""
            entry = {"name": name, "module": module, "dist": dist}
            if origin.kind == "file":        # no directory: a log holds no absolute path
                entry.update(file=Path(origin.path).name, sha256=origin.sha256)
            out.append(entry)
        return out

    def origin_of(self, plugin: str) -> Origin:
        return self.origins.get(plugin, Origin("object"))


def new_plugin_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(hookspecs)
    return pm


def autoload_disabled() -> bool:
    return os.environ.get(AUTOLOAD_ENV, "") not in ("", "0")


def load_plugins(extra: Iterable[Any] = (), *, plugins_dirs: Iterable[Path] = (),
                 disable: Iterable[str] = ()) -> Plugins:
    """Load the plugins and collect their policies.

    `extra` are plugin objects (modules or instances) registered after the
    others, as tests do; one that is already registered (an installed
    plugin's module) is not registered twice."""
    plugins = Plugins(new_plugin_manager(), PolicyRegistry())
    disable = set(disable)
    candidates = [*_entry_points(), *(c for d in plugins_dirs for c in _directory(Path(d)))]
    for name, origin, load in candidates:
        if name in disable:
            if origin.kind == "built-in":
                raise PluginError(f"disable: {name!r} is a built-in plugin; only third-party "
                                  "and plugins-directory plugins can be disabled")
            plugins.disabled.append(name)
            continue
        if origin.kind == "distribution" and autoload_disabled():
            continue
        _add(plugins, name, origin, load)
    for plugin in extra:       # named by module or class, never by id(): headers stay stable
        if plugins.pm.is_registered(plugin):
            continue
        name = getattr(plugin, "__name__", type(plugin).__qualname__)
        _add(plugins, name, Origin("object"), lambda plugin=plugin: plugin)
    _drop_dangling(plugins)
    return plugins


def _entry_points() -> list[tuple[str, Origin, Any]]:
    """(name, origin, loader) of the entry-point group: built-ins first."""
    found = []
    for ep in metadata.entry_points(group=PROJECT):
        dist = ep.dist.metadata["name"] if ep.dist else ""
        version = ep.dist.version if ep.dist else ""
        builtin = dist == DIST or (not dist and ep.value.startswith("workbench.plugins."))
        origin = (Origin("built-in", DIST, version or package_versions()[DIST]) if builtin
                  else Origin("distribution", dist, version, path="" if dist else ep.value))
        found.append((not builtin, ep.name, origin, ep.load))
    return [(name, origin, load) for _, name, origin, load in sorted(found, key=lambda x: x[:2])]


def _directory(directory: Path) -> list[tuple[str, Origin, Any]]:
    """The plugin modules of a plugins directory: each `NAME.py` and each
    package `NAME/__init__.py`, by name; files starting with _ are skipped."""
    paths = sorted(p for p in directory.iterdir()
                   if not p.name.startswith(("_", ".")) and
                   (p.suffix == ".py" and p.is_file() or (p / "__init__.py").is_file()))
    out = []
    for path in paths:
        if not path.stem.isidentifier():     # not a module name (a log must hold it, too)
            out.append((ascii(path.stem)[1:-1], Origin("file", path=ascii(str(path))[1:-1]),
                        functools.partial(_not_a_module, path)))
            continue
        file = path if path.suffix == ".py" else path / "__init__.py"
        digest = hashlib.sha256(file.read_bytes()).hexdigest()[:16]
        origin = Origin("file", path=str(path), sha256=digest)
        out.append((path.stem, origin, functools.partial(_import_file, path.stem, file)))
    return out


def _not_a_module(path: Path) -> None:
    raise ImportError(f"{ascii(path.name)} is not a Python module name (letters, digits and _, "
                      "not starting with a digit)")


def _import_file(name: str, file: Path) -> types.ModuleType:
    """Import a plugins-directory file as workbench_local_plugins.NAME: in
    sys.modules, so that its policy classes pickle to worker processes."""
    sys.modules.setdefault(LOCAL_PACKAGE, types.ModuleType(LOCAL_PACKAGE))
    modname = f"{LOCAL_PACKAGE}.{name}"
    spec = importlib.util.spec_from_file_location(
        modname, file, submodule_search_locations=[str(file.parent)]
        if file.name == "__init__.py" else None)
    module = importlib.util.module_from_spec(spec)
    sys.modules[modname] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[modname]
        raise
    return module


def _add(plugins: Plugins, name: str, origin: Origin, load: Any) -> None:
    """Import, check, register and run one plugin's registration; on any
    failure undo it and set the plugin aside."""
    if plugins.pm.has_plugin(name):
        plugins.broken.append(Broken(name, origin, "another plugin has that name "
                                     f"({plugins.origin_of(name)})"))
        return
    try:
        plugin = load()
    except BaseException as e:
        if isinstance(e, KeyboardInterrupt):
            raise
        plugins.broken.append(Broken(name, origin, f"cannot be imported: {type(e).__name__}: "
                                     f"{e}", short_traceback(e)))
        return
    problems = plugin_problems(plugin)
    if problems:
        plugins.broken.append(Broken(name, origin, "; ".join(problems)))
        return
    try:
        plugins.pm.register(plugin, name=name)
    except (ValueError, pluggy.PluginValidationError) as e:   # a bad hookimpl signature
        plugins.broken.append(Broken(name, origin, str(e)))
        return
    plugins.origins[name] = origin
    problem, tb = _register_policies(plugins, name, plugin)
    if problem is not None:
        plugins.pm.unregister(plugin)
        del plugins.origins[name]
        plugins.broken.append(Broken(name, origin, problem, tb))


def _register_policies(plugins: Plugins, name: str, plugin: Any) -> tuple[str | None, str]:
    impl = getattr(plugin, "workbench_register_policies", None)
    if impl is None:
        return None, ""
    registry = plugins.registry
    saved = registry.snapshot()
    registry.current_plugin = name
    try:
        impl(registry=registry)
    except PluginError as e:
        registry.restore(saved)
        return str(e), ""
    except BaseException as e:
        if isinstance(e, KeyboardInterrupt):
            raise
        registry.restore(saved)
        return (f"workbench_register_policies raised {type(e).__name__}: {e}",
                short_traceback(e))
    return None, ""


def _drop_dangling(plugins: Plugins) -> None:
    """Set aside each plugin whose presets or follow-ups name what nobody
    registered, until none is left (one may depend on another)."""
    while dangling := plugins.registry.dangling():
        for name, problem in sorted(dangling.items()):
            plugins.registry.remove_plugin(name)
            plugins.pm.unregister(name=name)
            plugins.broken.append(Broken(name, plugins.origins.pop(name), problem))


def require(plugins: Plugins) -> None:
    """Built-in plugins must load: without them nothing can run."""
    broken = [b for b in plugins.broken if b.origin.kind == "built-in"]
    if broken:
        raise PluginError(str(broken[0]))


@functools.cache
def package_versions() -> dict[str, str]:
    out = {}
    for dist in (DIST, "trio", "pluggy", "structlog", "orjson", "pydantic"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out
