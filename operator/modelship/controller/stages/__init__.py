"""The stages of a ModelDeployment, one module each, in the order ``controller.plan`` runs them:

- ``resolve``: results the revision already has (status, the namespace's revision cache); the model's pin;
- ``optimize``: the optimization Job (fetch, verify, optimize, evaluate, gate) -> status.optimization;
- ``gate``: may the revision ship (the accuracy gate and ``onFail``);
- ``build``: the build Job (package and push the serving image) -> status.image;
- ``deploy``: which revision serves (``target``) and its serving objects and rollout.

Every stage is a pure function of a ``Context`` (the ModelDeployment, its revision, what was observed, the
operator config, the time) and of the outcomes of the stages before it, to a typed outcome: its part of status
through the API's status models, and ``Effects`` (conditions, objects to create/apply/delete, a failure that
stalls the resource, work in flight, when to look again). Both Job-backed stages run through ``jobs``, the one
piece that knows attempts, backoff, the pod-status grace and permanent vs temporary failures.

A new stage (e.g. progressive delivery between build and deploy) is a module with the same shape: it takes the
outcomes it depends on and returns its own, and ``plan`` adds its effects to the fold.
"""
