"""``alpr-topo new-plugin NAME``: write a ready-to-install plugin package from templates.

The templates are ``*.tmpl`` files in :mod:`alpr_topo.plugins.templates` (shipped as package
data), rendered with :class:`string.Template`, so they stay readable as the files they become
and need no template engine. ``TEMPLATES`` says where each one goes.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from string import Template

from .. import __version__

#: Lowercase letters, digits and single dashes, starting with a letter: valid as a
#: distribution name, and as a module and class name once dashes become underscores.
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9]*(?:-[a-z0-9]+)*$")
DIST_PREFIX = "alpr-topo-"

#: template file -> path inside the new plugin folder (itself a template).
TEMPLATES: dict[str, str] = {
    "pyproject.toml.tmpl": "pyproject.toml",
    "README.md.tmpl": "README.md",
    "gitignore.tmpl": ".gitignore",
    "__init__.py.tmpl": "${module}/__init__.py",
    "plugin.py.tmpl": "${module}/plugin.py",
    "test_plugin.py.tmpl": "tests/test_${module}.py",
    "topology.yaml.tmpl": "topology.yaml",
}


class PluginNameError(ValueError):
    """NAME cannot become a distribution, module and stage type name."""


def plugin_names(name: str) -> dict[str, str]:
    """Every name the templates use, derived from NAME (``acme-blur`` -> ``alpr_topo_acme_blur``, ...).

    A leading ``alpr-topo-`` is not doubled: ``alpr-topo-acme`` gives the same names as ``acme``.
    """
    if not NAME_PATTERN.match(name):
        raise PluginNameError(
            f"invalid plugin name {name!r}: use lowercase letters, digits and dashes, "
            "starting with a letter (e.g. 'blur-faces')"
        )
    base = name[len(DIST_PREFIX):] if name.startswith(DIST_PREFIX) and len(name) > len(DIST_PREFIX) else name
    ident = base.replace("-", "_")
    return {
        "name": name,
        "dist": DIST_PREFIX + base,
        "module": "alpr_topo_" + ident,
        "entry_point": DIST_PREFIX + base,  # unique, as pluggy skips a name already registered
        "meta_key": ident,
        "stage_type": f"{ident}.example",
        "class_name": "".join(part.capitalize() for part in base.split("-")) + "Stage",
        "requires": f"alpr-topo>={__version__}",
        # A topology name is at most 32 characters (it names the run's sockets and segments).
        "topology_name": f"{name[:27].rstrip('-')}-demo",
    }


def write_plugin(name: str, dest: str | Path = ".", force: bool = False) -> Path:
    """Render the plugin templates into ``dest/NAME`` and return that folder.

    Raises :class:`PluginNameError` (a ``ValueError``) for a bad NAME and ``FileExistsError``
    when the folder exists and ``force`` is false; with ``force`` the template files are
    written over and any other file in the folder is left alone.
    """
    names = plugin_names(name)
    root = Path(dest) / name
    if root.exists() and not force:
        raise FileExistsError(f"{root} already exists; use --force to overwrite its files")
    if root.exists() and not root.is_dir():
        raise FileExistsError(f"{root} exists and is not a folder")
    templates = resources.files("alpr_topo.plugins.templates")
    for template, target in TEMPLATES.items():
        text = Template(templates.joinpath(template).read_text(encoding="utf-8")).substitute(names)
        path = root / Template(target).substitute(names)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def next_steps(root: Path) -> str:
    """What to tell the user after :func:`write_plugin` (the CLI prints it)."""
    names = plugin_names(root.name)
    return "\n".join([
        f"Wrote {names['dist']} to {root}/ (stage type {names['stage_type']}).",
        "Next:",
        f"  cd {root}",
        "  pip install -e '.[test]'       # registers the alpr_topo.plugins entry point",
        "  python -m pytest               # tests with alpr_topo.core.testing.StageHarness",
        f"  alpr-topo plugins              # {names['stage_type']} is listed",
        "  alpr-topo up topology.yaml     # test pattern -> your stage -> out/*.jsonl",
        f"Edit {names['module']}/plugin.py to make the stage your own.",
    ])
