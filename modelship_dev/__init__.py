"""Developer-only tooling: the test control plane (``cluster``), the real-node demo driver (``node_demo``,
`make demo`) and the no-cluster demo (``local_demo``).

Not part of the product: the wheel packages only ``operator/modelship`` and the images copy only that, so
nothing here ships. Importable from a checkout (the repository root on ``sys.path``: pytest's ``pythonpath``,
the ``hack/`` wrappers).
"""
