"""Settings shared by every test tier."""

from hypothesis import HealthCheck, settings

# No per-example time limit: hypothesis' default 200 ms deadline is a timed assertion, and on a loaded 2-core CI
# machine it fails correct code (seen: tests/unit/test_mergepatch.py under a concurrent setup run).
settings.register_profile("modelship", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("modelship")
