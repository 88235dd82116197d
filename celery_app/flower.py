"""Flower locked by the project's Celery app, whatever directory ``celery -A celery_app flower``
starts in.

Flower reads its configuration file (``flowerconfig.py``) from its working directory, so a
protection put there would hold only where that file is. These are applied by the app itself:
Celery's command line loads the app (``celery_app.app``) before it runs the ``flower``
command, and :func:`lock_flower` runs then, in that process. What it enforces:

- **A login.** Flower refuses to start without one: ``FLOWER_BASIC_AUTH`` (``user:password``,
  comma-separated pairs, neither part empty) or Flower's OAuth (``FLOWER_AUTH`` with
  ``FLOWER_AUTH_PROVIDER``). One line naming ``FLOWER_BASIC_AUTH``, exit code 2.
- **Loopback.** Flower listens on ``127.0.0.1`` unless an address is given
  (``--address=0.0.0.0`` in a container, or ``FLOWER_ADDRESS``); Flower's own default, an empty
  address, would be every interface.
- **Read-only.** Only the routes that read remain (:data:`READ_ONLY_HANDLERS`): running a task
  (``/api/task/apply``, ``async-apply``, ``send-task``, through which a login could inject a
  forged fill), revoking, aborting, time- or rate-limiting tasks, and shutting down,
  restarting, resizing or re-queueing workers answer 404 and send nothing, as does any acting
  route a later Flower adds. Flower's ``read_only`` is set too, so its pages offer no buttons.
- **/metrics needs the login** like every other page. Only ``/healthcheck`` (it answers
  ``OK``) and Flower's static files stay open, for the container healthcheck and the login
  page.
- **No task events forced on.** ``enable_events`` defaults to off: when on, Flower broadcasts
  ``enable_events`` to every worker every 5 s, which turns task events on in the price workers
  too (about a third of their throughput). Order workers run with ``-E`` and send theirs
  anyway. ``--enable_events=True`` or ``FLOWER_ENABLE_EVENTS`` still turn it on.

Flags and ``FLOWER_*`` variables are read after these defaults, so they still override the
address and the events; no flag brings back a removed route or starts Flower without a login.
"""

from __future__ import annotations

import importlib.util
import sys
from typing import Any, Final

from alpaca_broker.errors import ConfigError
from alpaca_broker.settings import exit_on_config_error

LOGIN_VARIABLE: Final = "FLOWER_BASIC_AUTH"
LOOPBACK: Final = "127.0.0.1"

READ_ONLY_HANDLERS: Final = (
    "flower.views.workers.WorkersView",
    "flower.views.workers.WorkerView",
    "flower.views.tasks.TaskView",
    "flower.views.tasks.TasksView",
    "flower.views.tasks.TasksDataTable",  # its POST is the tasks table's query
    "flower.views.broker.BrokerView",
    "flower.api.workers.ListWorkers",
    "flower.api.tasks.ListTasks",
    "flower.api.tasks.ListTaskTypes",
    "flower.api.tasks.GetQueueLengths",
    "flower.api.tasks.TaskInfo",
    "flower.api.tasks.TaskResult",
    "flower.views.monitor.Metrics",  # behind the login: see _lock_routes
    "flower.views.monitor.Healthcheck",
    "tornado.web.StaticFileHandler",
    "flower.views.auth.LoginHandler",
    "flower.views.auth.LogoutHandler",
    "flower.views.error.NotFoundErrorHandler",  # the catch-all: 404 for every other path
)
"""Flower's routes that only read, by handler class; every other route is removed."""


def login_problem(basic_auth: Any, oauth: Any) -> str | None:
    """Why Flower's login options (``basic_auth``, a list of ``user:password``; ``auth``, the
    OAuth e-mail pattern) do not require a login, or None when they do."""
    if oauth:
        return None
    if not basic_auth:
        return (
            "is required: Flower does not start without a login "
            "(user:password, comma-separate several)"
        )
    for credential in basic_auth:
        user, sep, password = str(credential).partition(":")
        if not (sep and user and password):
            return "must be user:password pairs (comma-separated), neither part empty"
    return None


def _name(handler: object) -> str:
    return f"{getattr(handler, '__module__', '?')}.{getattr(handler, '__qualname__', '?')}"


def _lock_routes() -> None:
    """Remove every acting route from Flower's route list, in place (Flower's application
    reads that list when it is built), and put /metrics behind the login."""
    from flower import urls
    from flower.views.monitor import Metrics
    from tornado import web

    class AuthenticatedMetrics(Metrics):  # type: ignore[misc]
        @web.authenticated
        async def get(self) -> None:
            await super().get()

    def handler_of(route: Any) -> Any:
        return getattr(route, "handler_class", None) or route[1]

    kept = [route for route in urls.handlers if _name(handler_of(route)) in READ_ONLY_HANDLERS]
    urls.handlers[:] = [
        (route[0], AuthenticatedMetrics) if handler_of(route) is Metrics else route
        for route in kept
    ]


def _locked_flower_class(base: type) -> type:
    class LockedFlower(base):  # type: ignore[misc]
        """Flower's application, refusing to start without a login, on loopback unless
        told otherwise, read-only."""

        locked = True

        def __init__(self, options: Any = None, **kwargs: Any) -> None:
            from tornado.options import options as defaults

            options = options if options is not None else defaults  # as Flower's own
            problem = login_problem(options.basic_auth, options.auth)
            if problem is not None:
                exit_on_config_error(ConfigError(LOGIN_VARIABLE, problem))
            if not options.address and not options.unix_socket:
                options.address = LOOPBACK
            options.read_only = True
            super().__init__(options=options, **kwargs)

    return LockedFlower


def lock_flower() -> None:
    """Lock Flower in this process (see the module's docstring); idempotent. Does nothing
    where Flower is not installed. Run when the Celery command line loads the app, before it
    runs a command (``flower`` reads its options, builds its application and binds later)."""
    if "flower.command" not in sys.modules and importlib.util.find_spec("flower") is None:
        return
    from flower import command
    from tornado.options import options

    if getattr(command.Flower, "locked", False):
        return
    _lock_routes()
    command.Flower = _locked_flower_class(command.Flower)
    # Defaults only: Flower reads its FLOWER_* variables, its config file and its flags
    # after this, and each of them still overrides.
    options.enable_events = False
    options.address = LOOPBACK
