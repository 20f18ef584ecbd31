"""Shared fixtures live in plugin modules beside this file (tests/ is on sys.path: no __init__.py here)."""

pytest_plugins = ["fixtures_registry", "fixtures_images"]
