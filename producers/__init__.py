"""Producer process: stream threads, the hand-off to Celery, and their supervisor."""
