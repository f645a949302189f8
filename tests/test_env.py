"""Environments are data: built-ins load, an edited copy is a new domain, bad files say where."""

import tomllib

import pytest

from sim2sg.errors import InputError
from sim2sg.scene.environment import builtin_names, load_env, parse_env, resolve
from sim2sg.scene.sdr import sample_scene, scene_rng


def test_builtins():
    assert builtin_names() == ["clevr", "clevr-appearance", "clevr-content", "clevr-target",
                               "dining", "dining-target", "driving", "driving-target"]
    clevr = load_env("clevr")
    assert clevr.categories == ("cube", "sphere", "cylinder")
    assert clevr.predicates == ("front", "behind", "left", "right")
    assert (clevr.min_dist, clevr.margin, clevr.relation_threshold) == (0.25, 0.4, 0.2)
    assert len(clevr.palette) == 8 and set(clevr.materials) == {"rubber", "metal"}
    assert "on" in load_env("dining").predicates
    assert load_env("driving").require_category == ("car",)


def test_copied_and_edited_file_is_a_new_domain(tmp_path):
    text = resolve("clevr")[1]
    text = text.replace('name = "clevr"', 'name = "clevr-red"')
    text = text.replace('colors = ["gray", "red", "blue", "green", "brown", "purple", "cyan", "yellow"]', 'colors = ["red"]')
    text = text.replace("total = [3, 10]", "total = [2, 2]")
    p = tmp_path / "clevr-red.toml"
    p.write_text(text)
    env = load_env(p)
    g = sample_scene(env, scene_rng(0, 0))
    assert g.graph["env"] == "clevr-red" and len(g) == 2
    assert all(a["attributes"]["color"] == "red" for _, a in g.nodes(data=True))


def _raw():
    return tomllib.loads(resolve("dining")[1])


@pytest.mark.parametrize("mutate,field", [
    (lambda r: r.pop("categories"), "categories"),
    (lambda r: r.update(predicates=["front", "under"]), "predicates[1]"),
    (lambda r: r["camera"].update(hfov_deg="wide"), "camera.hfov_deg"),
    (lambda r: r["objects"]["chair"].update(colors=["pink"]), "objects.chair.colors[0]"),
    (lambda r: r["objects"]["chair"].update(anchor="laptop"), "objects.chair.anchor"),
    (lambda r: r["objects"]["table"].update(placement="sky"), "objects.table.placement"),
    (lambda r: r["objects"]["table"].update(size_min=[1, -1, 1]), "objects.table.size_min[1]"),
    (lambda r: r["objects"]["table"].update(count=[3, 1]), "objects.table.count"),
    (lambda r: r["palette"].update(oak=[300, 0, 0]), "palette.oak[0]"),
    (lambda r: r["objects"]["laptop"].update(textures=["velvet"]), "objects.laptop.textures[0]"),
    (lambda r: r["lights"].pop("key_intensity"), "lights.key_intensity"),
    (lambda r: r["context"].update(kind="space"), "context.kind"),
])
def test_bad_env_names_field(mutate, field):
    raw = _raw()
    mutate(raw)
    with pytest.raises(InputError) as e:
        parse_env(raw, "my.toml")
    assert e.value.field == field and e.value.source == "my.toml"


def test_unknown_name_and_bad_toml(tmp_path):
    with pytest.raises(InputError, match="unknown environment"):
        load_env("mars")
    p = tmp_path / "x.toml"
    p.write_text("name = ")
    with pytest.raises(InputError, match="not valid TOML"):
        load_env(p)
