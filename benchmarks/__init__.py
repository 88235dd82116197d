"""The designs `alpaca-broker bench` compares this project's pipeline with (not shipped code
paths: nothing in producers/ or tasks/ imports them)."""
