"""The plugin manager: built-in stages, entry-point packages and modules named in a topology."""

from __future__ import annotations

import importlib
import os
from functools import lru_cache
from typing import Iterable

import pluggy

from ..plugins import hookspecs
from .stage import Stage

ENTRY_POINT_GROUP = "alpr_topo.plugins"
#: Extra plugin modules to import, comma separated (handy for trying a plugin without packaging it).
PLUGINS_ENV = "ALPR_TOPO_PLUGINS"


class PluginError(Exception):
    """A plugin could not be loaded or clashes with another one."""


@lru_cache(maxsize=None)
def plugin_manager() -> pluggy.PluginManager:
    """The process-wide manager, with built-ins, entry points and ``$ALPR_TOPO_PLUGINS`` loaded."""
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    if pm.get_plugin("builtin") is None:  # running from a source tree that was never installed
        from ..plugins import builtin

        pm.register(builtin, name="builtin")
    _register_modules(pm, os.environ.get(PLUGINS_ENV, "").split(","))
    return pm


def load_modules(modules: Iterable[str]) -> None:
    """Import and register plugin modules by dotted name (the topology's ``plugins:`` list)."""
    _register_modules(plugin_manager(), modules)
    stage_types.cache_clear()


def _register_modules(pm: pluggy.PluginManager, modules: Iterable[str]) -> None:
    for name in modules:
        name = name.strip()
        if not name or pm.get_plugin(name) is not None:
            continue
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            raise PluginError(f"cannot import plugin module {name!r}: {exc}") from exc
        pm.register(module, name=name)


@lru_cache(maxsize=None)
def stage_types() -> dict[str, type[Stage]]:
    """Every registered stage type by name; a name given by two plugins is an error."""
    pm = plugin_manager()
    found: dict[str, type[Stage]] = {}
    owner: dict[str, str] = {}
    for impl in pm.hook.alpr_topo_stage_types.get_hookimpls():
        for cls in impl.function() or []:
            if not (isinstance(cls, type) and issubclass(cls, Stage)) or not cls.type_name:
                raise PluginError(f"plugin {impl.plugin_name!r} returned {cls!r}, which is not a Stage with a type_name")
            if cls.type_name in found and found[cls.type_name] is not cls:
                raise PluginError(
                    f"stage type {cls.type_name!r} is provided by both {owner[cls.type_name]!r} and {impl.plugin_name!r}"
                )
            found[cls.type_name] = cls
            owner[cls.type_name] = impl.plugin_name
    return dict(sorted(found.items()))


def plugin_of(type_name: str) -> str:
    """Which plugin provides a stage type (for ``alpr-topo plugins``)."""
    pm = plugin_manager()
    for impl in pm.hook.alpr_topo_stage_types.get_hookimpls():
        if any(getattr(c, "type_name", None) == type_name for c in impl.function() or []):
            return impl.plugin_name
    return "?"
