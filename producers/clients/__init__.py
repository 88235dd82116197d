"""One client module per stream kind, over alpaca-py's stream classes.

``market`` is the read loop of every market-data stream (stocks today; crypto, options and
news later), ``trading`` the order stream's. A stock-like kind adds a module that says how
its channels are subscribed (``stocks``); the stream table (``producers.streams``) says
which client class, endpoint and subscription each kind uses.
"""
