"""The one alignment vocabulary (sim2sg.train.align)."""

import pytest

from sim2sg.errors import InputError
from sim2sg.train.align import canonical, model_mode, parse_align


@pytest.mark.parametrize("text, terms, mode", [
    ("none", set(), "none"),
    ("appearance", {"appearance"}, "appearance"),
    ("prediction", {"prediction"}, "prediction"),
    ("both", {"appearance", "prediction"}, "both"),
    ("appearance+prediction", {"appearance", "prediction"}, "both"),
    ("label", {"label"}, "none"),
    ("label+appearance", {"label", "appearance"}, "appearance"),
    ("all", {"label", "appearance", "prediction"}, "both"),
    ("prediction+label+appearance", {"label", "appearance", "prediction"}, "both"),
])
def test_terms_and_network_mode(text, terms, mode):
    got = parse_align(text, loop=True)
    assert got == terms and model_mode(got) == mode
    assert parse_align(canonical(got), loop=True) == got


def test_label_needs_the_loop():
    assert parse_align("both", loop=False) == {"appearance", "prediction"}
    for text in ("label", "all", "label+appearance"):
        with pytest.raises(InputError, match="sim2sg loop"):
            parse_align(text, loop=False)


@pytest.mark.parametrize("text", ["", "lable", "appearance+", "appearance+appearance", "all+label", "NONE"])
def test_bad_spellings_are_one_clear_error(text):
    with pytest.raises(InputError) as e:
        parse_align(text, loop=True)
    assert e.value.field == "align"
