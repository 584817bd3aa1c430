"""Sphinx configuration for hw1sk: API from numpydoc docstrings and a sphinx-gallery."""

import os
import warnings

import hw1sk

project = "hw1sk"
author = "hw1sk developers"
copyright = "2026, hw1sk developers"
release = hw1sk.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.intersphinx",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
]

autosummary_generate = True
# hooks such as forward or on_epoch_end that have no docstring of their own are
# left out instead of showing the torch/skorch base-class text
autodoc_inherit_docstrings = False
autodoc_default_options = {"members": True, "inherited-members": False}
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
# Examples sections in docstrings are doctested by pytest, not rendered as plots here.
numpydoc_use_plots = False

templates_path = ["_templates"]
exclude_patterns = ["_build", "examples/README.rst", "auto_examples/*.ipynb",
                    "auto_examples/*.py", "auto_examples/*.zip", "auto_examples/*.md5"]

html_theme = "pydata_sphinx_theme"
html_title = "hw1sk"
html_static_path = []

# No network on the build machines: no intersphinx inventories are fetched.
intersphinx_mapping = {}

os.environ.setdefault("MPLBACKEND", "Agg")
warnings.filterwarnings("ignore", category=UserWarning, message="Matplotlib is currently using agg")

sphinx_gallery_conf = {
    "examples_dirs": ["examples"],
    "gallery_dirs": ["auto_examples"],
    "filename_pattern": r"/plot_",
    "within_subsection_order": "FileNameSortKey",
    "download_all_examples": False,
    "remove_config_comments": True,
    "plot_gallery": os.environ.get("HW1SK_DOCS_PLOT_GALLERY", "True"),
    "abort_on_example_error": True,
    "only_warn_on_example_error": False,
    "show_memory": False,
    # "Examples using X" on the API pages (the minigallery of docs/_templates)
    "backreferences_dir": "gen_modules/backreferences",
    "doc_module": ("hw1sk",),
}


def _skip_member(app, what, name, obj, skip, options):
    """Leave out the ``set_*_request`` methods scikit-learn's metadata routing adds."""
    if name.startswith("set_") and name.endswith("_request"):
        return True
    return None


def setup(app):
    app.connect("autodoc-skip-member", _skip_member)
