"""Packaging an optimized model into a serving image.

- ``context``: the build context (Dockerfile FROM the serving runtime + the verified artifact + OCI labels);
- ``local``: building the model image against a local Docker engine (docker SDK) and loading it into kind;
- ``cli``: ``modelship build`` (and ``modelship build context``, run by the build Job's init container).

The in-cluster build Job itself is a pure manifest builder in ``modelship.resources.build_job``; the one-line
result it leaves in its termination message is part of the API (``modelship.api.build_result``), which the
operator parses without importing this package.
"""
