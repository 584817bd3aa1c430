"""The studies' docstrings, composed with the shared texts of ``hw1sk.studies._docs``."""

import inspect
import re

import pytest
from numpydoc.docscrape import ClassDoc

import hw1sk.studies as studies
from hw1sk.studies._base import Study
from hw1sk.studies._docs import EXECUTION, OUTCOME, compose

STUDIES = [getattr(studies, name) for name in studies.__all__]


def _names(section):
    return {name.strip() for names, _, _ in section for name in names.split(",")}


@pytest.mark.parametrize("cls", [Study, *STUDIES], ids=lambda c: c.__name__)
def test_every_parameter_of_the_signature_is_documented(cls):
    documented = _names(ClassDoc(cls, config={"show_class_members": False})["Parameters"])
    signature = set(inspect.signature(cls.__init__).parameters) - {"self"}
    assert signature - documented == set()
    assert set(EXECUTION) <= documented


@pytest.mark.parametrize("cls", STUDIES, ids=lambda c: c.__name__)
def test_shared_attributes_are_documented_and_no_placeholder_is_left(cls):
    doc = ClassDoc(cls, config={"show_class_members": False})
    assert set(OUTCOME) <= _names(doc["Attributes"])
    assert re.findall(r"\{\w+\}", cls.__doc__) == []
    assert inspect.getdoc(cls) == cls.__doc__  # help() shows the composed text as it is


def test_compose_substitutes_fields_and_appends_only_what_is_missing():
    doc = compose("""Train.

    Parameters
    ----------
    {n_seeds}
    progress : bool
        Shown.

    Attributes
    ----------
    diverged_ : DataFrame
        Own text.
    """, {"runs": "Runs of each width"})
    assert "n_seeds : int, default=1\n    Runs of each width; the first seed" in doc
    assert doc.count("progress : ") == 1 and doc.count("diverged_ : ") == 1
    assert doc.index("vectorize : ") < doc.index("Attributes") < doc.index("settings_ : ")
    assert compose(None) is None
