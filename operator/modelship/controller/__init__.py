"""The kopf operator: thin handlers feed a work queue; each reconcile observes, plans (pure) and applies."""
