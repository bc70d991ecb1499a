"""Pure desired-state builders: ModelDeployment spec (and stage results) in, plain manifest dicts out. No I/O."""
