"""The Modelship model server (``modelship serve``): TF Serving REST and the Open Inference Protocol.

Needs only the ``[serve]`` extra (ai-edge-litert, numpy, uvloop, httptools, orjson, prometheus-client);
TensorFlow is imported only to serve a SavedModel. Public API:

* :func:`modelship.serve.model.load_model` -> :class:`~modelship.serve.model.ServedModel`
  (signature, thread-safe ``predict``);
* :class:`modelship.serve.app.ServingApp` (routes, batching, metrics; transport-independent);
* :class:`modelship.serve.server.Server` / :func:`modelship.serve.server.run` (HTTP server lifecycle);
* :func:`modelship.serve.cli.register` (the ``serve`` subcommand).
"""
