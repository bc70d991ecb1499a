"""The attack suite of issue 14: a tenant with a namespace editor's rights tries to escalate through a
ModelDeployment; every attack must fail and leave everything but the ModelDeployment's own children as it was.
The frame: ``tenant.py`` (the attacker's identity), ``snapshot.py`` (before/after of a whole namespace),
``conftest.py`` (the operator with the chart's RBAC, a tenant per test)."""
