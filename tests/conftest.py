"""Suite-wide test settings."""

from __future__ import annotations

from hypothesis import HealthCheck, settings

# Wall-clock deadlines make property tests fail on a loaded 2-core CI machine for
# reasons unrelated to the property; a real hang is caught by pytest-timeout.
settings.register_profile(
    "emsg", deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
settings.load_profile("emsg")
