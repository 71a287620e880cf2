"""socketsvc's lifecycle for workers that are not socketsvc's own (RQ)."""
