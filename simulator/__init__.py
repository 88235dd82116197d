"""A local Alpaca simulator speaking the real wire protocols."""
