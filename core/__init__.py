"""Pieces every app shares (the API's fields and error shape, throttles, parsers, the cache backend,
the Kafka client and topic names, admin building blocks, the worker loop). Nothing here imports an
app: apps import this package, never the other way round."""
