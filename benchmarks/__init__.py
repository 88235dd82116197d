"""``alpaca-broker bench``: ``run`` (the runs), ``designs`` (what each design starts),
``probes`` (channel listeners, process samplers) and ``report`` (table and plot); ``naive``
and ``direct`` are the designs this project's pipeline is compared with (not shipped code
paths: nothing in producers/ or tasks/ imports them)."""
