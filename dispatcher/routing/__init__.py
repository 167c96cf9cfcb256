"""Routing: the pure router, prices, backoff maths and request size."""
