"""Suite-wide settings. Property tests (hypothesis) draw the same examples on every run and keep
no example database: a run's result never depends on a random seed or on what failed before
(issue 11, "same tokens on every run"). HYPOTHESIS_PROFILE=explore draws fresh random examples
(and remembers failures) for a search outside CI."""

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
