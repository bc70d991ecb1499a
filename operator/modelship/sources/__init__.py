"""Model and data sources: one small client per kind of storage, no TensorFlow and no SDKs.

``modelship.fetch`` is the entry point (URI -> local path + digest); these modules hold what it uses:

* ``errors``  -- FetchError, permanent or temporary;
* ``digest``  -- content digests of files and directories;
* ``paths``   -- safe relative paths and deterministic tar archives (no traversal out of a download dir);
* ``access``  -- endpoint, extra CA and credentials of one source (credentials as mounted files);
* ``http``    -- bounded HTTP(S): timeouts, redirects, byte limits, error classification;
* ``s3``      -- S3 with Signature Version 4 (AWS, MinIO, Ceph, versitygw, GCS interoperability);
* ``oci``     -- OCI registry HTTP API v2: model artifacts (push, pull by digest);
* ``mlflow``  -- MLflow model registry over its REST API (``models:/NAME/VERSION``).
"""
