"""docs/environments.md names every field an environment file can hold."""

import inspect
import re
from dataclasses import fields
from pathlib import Path

import pytest

from sim2sg.render.post import PostProcess
from sim2sg.scene import environment
from sim2sg.scene.environment import builtin_names, load_env

ROOT = Path(__file__).resolve().parents[1]
DOC = (ROOT / "docs" / "environments.md").read_text(encoding="utf-8")
PARSER = inspect.getsource(environment)  # the module of parse_env and its typed reader

# Tables whose keys are names the file chooses (categories, colours, materials, scales), not fields;
# the doc writes such a level as the placeholder given here.
NAMED_CHILDREN = {"objects": "<category>", "materials": "<name>", "palette": None, "sizes": None}


def _fields(table: dict, path: tuple = ()) -> set[str]:
    """What the doc must show for a parsed environment TOML: `[dotted.table]` for every table and
    the name of every field, with user-chosen names (categories, colours, ...) left out."""
    out = set()
    for key, value in table.items():
        named = bool(path) and path[-1] in NAMED_CHILDREN and not (path == ("objects",) and key == "total")
        here = path + ((NAMED_CHILDREN[path[-1]] or key) if named else key,)
        if isinstance(value, dict):
            out.add("[" + ".".join(here) + "]")
            out |= _fields(value, here)
        elif not named:
            out.add(key)
    return out


def _documented(token: str) -> bool:
    if token.startswith("["):  # a table, or the parent of a documented table ([appearance.post])
        return token in DOC or token[:-1] + "." in DOC
    return f"`{token}`" in DOC or f".{token}`" in DOC


@pytest.mark.parametrize("env", builtin_names())
def test_every_field_of_the_builtin_environments_is_documented(env):
    raw = load_env(env).raw
    missing = sorted(k for k in _fields(raw) if not _documented(k))
    assert not missing, f"docs/environments.md does not document {missing} (used by scenes/{env}.toml)"


def test_every_field_the_parser_reads_is_documented():
    # Literal keys read through the parser's typed reader: r.num(d, "key", ...), r.table(...), ...
    keys = set(re.findall(r'(?:r\.\w+|_rgb255)\(\s*(?:r,\s*)?\w+,\s*"([a-z_]+)"', PARSER))
    keys |= {f"{role}_{kind}" for role in ("ground", "road", "sidewalk", "wall") for kind in ("textures", "color")}
    keys |= {f.name for f in fields(PostProcess)}
    assert {"hfov_deg", "placement_weights", "sides", "follow_lane", "curb_height"} <= keys  # the regex works
    missing = sorted(k for k in keys if not (_documented(k) or _documented(f"[{k}]")))
    assert not missing, f"docs/environments.md does not document {missing} (read by parse_env)"
