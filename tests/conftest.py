"""Hypothesis profiles for the property tests.

"dev" is the default. "ci" runs fewer examples, derandomized so that a CI run
is reproducible, and is loaded when the environment variable CI is "true" (as
GitHub Actions and most CI services set it). HYPOTHESIS_PROFILE overrides both.
"""

import os

from hypothesis import HealthCheck, settings

# deadline=None: a run's duration depends on the machine's load, and no test
# may fail on timing. too_slow and data_too_large: logits of up to 17 x 300
# entries are drawn on purpose.
_COMMON = dict(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

settings.register_profile("dev", max_examples=100, **_COMMON)
settings.register_profile("ci", max_examples=40, derandomize=True, print_blob=True, **_COMMON)

_default_profile = "ci" if os.environ.get("CI", "").lower() == "true" else "dev"
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", _default_profile))
