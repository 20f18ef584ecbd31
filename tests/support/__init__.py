"""Helpers the test modules share; test modules import from here, never from each other.

``support`` and the scripts' modules (``imageset``, ``localregistry``, ``bench``) import by name because
pyproject's pytest ``pythonpath`` puts tests/ and scripts/ on the path. The modules that define fixtures
(registry, images, sources, faults) are plugins that tests/conftest.py lists in ``pytest_plugins``.
"""
