"""The optimizer: prune, cluster, low-rank, quantize, evaluate, gate, report (``modelship optimize``).

Entry points (none of them imports TensorFlow at import time):

* :func:`modelship.optimize.pipeline.optimize` with a :class:`modelship.optimize.request.Request`: run it as a library;
* :mod:`modelship.optimize.cli`: the ``optimize`` subcommand;
* :mod:`modelship.optimize.examples`: small example models and data (y = 2x - 1, digits MLP/CNN).
"""

from .errors import OptimizeError

__all__ = ["OptimizeError"]
