"""Test-suite settings.

Under CI (``CI`` set in the environment) hypothesis runs derandomized, so a submission's
result does not depend on the draw; locally it explores new examples on every run (and
prints the blob to reproduce a failure).
"""

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("dev", deadline=None, print_blob=True)
settings.load_profile("ci" if os.environ.get("CI") else "dev")
