"""Suite-wide settings.

Hypothesis runs the "ci" profile unless told otherwise: derandomized (the examples are a function
of the test alone, so every run, under any PYTHONHASHSEED, draws the same ones), no example
database (a failure found once is not replayed into later runs, which would change what they
test), no deadline (Numba compiles on first call), and a failing example printed as a blob to
pass to @reproduce_failure. Each property test states its own example budget (max_examples).
`python -m pytest --hypothesis-profile=explore` draws new random examples on each run instead.
"""
from hypothesis import settings

settings.register_profile("ci", derandomize=True, database=None, deadline=None, print_blob=True)
settings.register_profile("explore", deadline=None, print_blob=True)
settings.load_profile("ci")
