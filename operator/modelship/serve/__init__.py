"""The Modelship model server (``modelship serve``): TF Serving REST and the Open Inference Protocol.

Needs only the ``[serve]`` extra (ai-edge-litert, numpy, uvloop, httptools, orjson, prometheus-client, and
optionally pysimdjson for large JSON tensors); TensorFlow is imported only to serve a SavedModel. Public API:

* :func:`modelship.serve.model.load_model` -> :class:`~modelship.serve.model.ServedModel`
  (signature, thread-safe ``predict``);
* :func:`modelship.serve.app.create_app` -> :class:`~modelship.serve.app.ServingApp` (routes, batching,
  metrics; transport-independent);
* :func:`modelship.serve.server.start_server` (listen + serve in a running event loop, for embedding and smoke
  tests), :class:`~modelship.serve.server.Server`, :func:`~modelship.serve.server.run` (blocking, signals);
* :func:`modelship.serve.cli.register` (the ``serve`` subcommand).
"""
