"""The public surface: ``__all__`` is exactly what ``packrun`` exports, sorted, each documented."""

from __future__ import annotations

import inspect
import tomllib
import types
from importlib import metadata
from pathlib import Path

import packrun


def test_all__matches_the_public_names_of_the_package() -> None:
    exported = {
        name
        for name, value in vars(packrun).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    exported.discard("annotations")  # from __future__ import annotations
    assert set(packrun.__all__) == exported


def test_all__is_sorted_and_has_no_duplicates() -> None:
    assert list(packrun.__all__) == sorted(set(packrun.__all__))


def test_every_public_name__resolves_and_has_a_docstring() -> None:
    for name in packrun.__all__:
        value = getattr(packrun, name)
        if inspect.isclass(value) or inspect.isfunction(value):
            assert inspect.getdoc(value), f"packrun.{name} has no docstring"


def test_the_package__is_typed() -> None:
    assert packrun.__file__ is not None
    from pathlib import Path

    assert (Path(packrun.__file__).parent / "py.typed").is_file()


def test_version__is_pyproject_s_version_through_the_installed_metadata() -> None:
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert packrun.__version__ == pyproject["project"]["version"] == metadata.version("packrun")
