"""Flower's defaults for this project; ``celery -A celery_app flower`` loads this file.

Flower reads ``flowerconfig.py`` from its working directory (its ``--conf`` default), after
the ``FLOWER_*`` environment and before the command line. Two defaults differ from Flower's:

- ``address``: loopback only. Flower can run any registered task and shut workers down; put
  it behind authentication and a proxy before exposing it (docs/deployment.md).
- ``enable_events``: off. When on, Flower broadcasts ``enable_events`` to every worker every
  5 s, which turns task events on in the price workers too; they cost about a third of
  price throughput. Order workers are started with ``-E`` and send their events anyway.

Both are set on Flower's option object rather than as names in this file (Flower would then
apply them *over* the environment), and Flower's own ``FLOWER_*`` reader runs again
afterwards, so ``FLOWER_ADDRESS`` / ``FLOWER_ENABLE_EVENTS`` and the flags
(``--address=0.0.0.0``, ``--enable_events=True``) still override them. Everything else,
``FLOWER_BASIC_AUTH`` included, comes from Flower's environment variables or flags.
"""

from flower.command import apply_env_options
from tornado.options import options

options.address = "127.0.0.1"
options.enable_events = False
apply_env_options()
