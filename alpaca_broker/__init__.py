"""alpaca-broker: Alpaca streams into Redis through Celery."""
