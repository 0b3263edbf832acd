"""radiosonde's benchmarks: ``python -m bench [group ...]`` (or ``bash scripts/bench.sh``).

Each module here that does not start with ``_`` exposes ``GROUPS``, a list of
:class:`bench._harness.Group`; ``python -m bench --list`` shows them. To add a benchmark, add a
module with its own group (see ``bench/core.py`` for the pattern).
"""
