"""Durable pipeline state (not yet built): the StateStore protocol with SQLite and Redis
implementations (blocks and their stages, products, calibration registry, events, failures)."""
