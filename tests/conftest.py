"""Hypothesis profiles: ``dev`` (default, quick) and ``ci`` (loaded when CI is set).

Hypothesis ships its own ``ci`` profile and loads it when the CI environment variable is set;
registering ours under that name on purpose replaces it with settings that suit this suite:
derandomized (a red CI run reproduces exactly) and no per-example deadline (a loaded 2-core
machine must not turn slowness into failures; speed is measured in benchmarks, not tests).
"""

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "dev", max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "ci",
    max_examples=25,
    deadline=None,
    derandomize=True,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))
