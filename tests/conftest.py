"""Suite-wide test settings."""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis import HealthCheck, settings

# Every process a test starts (servers, the CLI) runs the source under test, whatever
# copy of emsg happens to be installed.
SRC = str(Path(__file__).resolve().parents[1] / "src")
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [SRC, os.environ.get("PYTHONPATH")]))

# Wall-clock deadlines make property tests fail on a loaded 2-core CI machine for
# reasons unrelated to the property; a real hang is caught by pytest-timeout.
settings.register_profile(
    "emsg", deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
settings.load_profile("emsg")
