"""inventory: what a site's registry holds, recorded so that the next pack leaves exactly that out.

``format`` is the file (spec/inventory-format.md), which ``bundle.delta`` reads as a delta's base;
``plan`` takes an inventory from any read store. This module imports neither, so that reading the
format does not load the plan and the pack modules it builds on.
"""
