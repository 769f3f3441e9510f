"""The worker: Celery tasks, the claim/lease protocol, output writers, upload."""
