"""Flower's defaults for this project; ``celery -A celery_app flower`` loads this file.

Flower reads ``flowerconfig.py`` from its working directory (its ``--conf`` default), after
the ``FLOWER_*`` environment and before the command line, and before it builds its web
application. Two defaults differ from Flower's:

- ``address``: loopback only. Put Flower behind authentication and a proxy before exposing it
  (docs/deployment.md).
- ``enable_events``: off. When on, Flower broadcasts ``enable_events`` to every worker every
  5 s, which turns task events on in the price workers too; they cost about a third of
  price throughput. Order workers are started with ``-E`` and send their events anyway.

Both are set on Flower's option object rather than as names in this file (Flower would then
apply them *over* the environment), and Flower's own ``FLOWER_*`` reader runs again
afterwards, so ``FLOWER_ADDRESS`` / ``FLOWER_ENABLE_EVENTS`` and the flags
(``--address=0.0.0.0``, ``--enable_events=True``) still override them. Everything else,
``FLOWER_BASIC_AUTH`` included, comes from Flower's environment variables or flags.

Two changes to Flower's routes, which no option can undo:

- **Read-only.** Flower's API can run any registered task (``/api/task/apply``,
  ``async-apply``, ``send-task``: anyone with the login could inject a forged fill through
  ``orders.publish_event``), revoke, abort, time-limit or rate-limit tasks, and shut down,
  resize or re-queue workers. Those routes are removed: they answer 404 and send nothing.
  The dashboard and the read API (workers, tasks, queues, task info and result) stay.
- **/metrics needs the login** like every other page (Prometheus: ``basic_auth`` in its
  scrape config). Only ``/healthcheck`` stays open, for the container healthcheck.

Every name here starts with ``_``: Flower treats a public name in this file as an option.
"""

from tornado.options import options as _options


def _read_only_flower() -> None:
    from flower import urls
    from flower.api import control, tasks
    from flower.views.monitor import Metrics
    from tornado import web

    control_handlers = {
        tasks.TaskApply,
        tasks.TaskAsyncApply,
        tasks.TaskSend,
        tasks.TaskAbort,
        *(
            value
            for value in vars(control).values()
            if isinstance(value, type) and issubclass(value, control.ControlHandler)
        ),
    }

    class AuthenticatedMetrics(Metrics):  # type: ignore[misc]
        @web.authenticated
        async def get(self) -> None:
            await super().get()

    def handler_of(route: object) -> object:
        return getattr(route, "handler_class", None) or route[1]  # type: ignore[index]

    kept = [route for route in urls.handlers if handler_of(route) not in control_handlers]
    urls.handlers[:] = [
        (route[0], AuthenticatedMetrics) if handler_of(route) is Metrics else route
        for route in kept
    ]


def _defaults() -> None:
    from flower.command import apply_env_options

    _options.address = "127.0.0.1"
    _options.enable_events = False
    apply_env_options()


_read_only_flower()
_defaults()
