"""Worker side: pure normalizers, the Redis publisher (Lua scripts) and the Celery tasks.

``tasks.prices`` and ``tasks.orders`` hold the tasks (they import the Celery app); every
other module is importable without it.
"""
