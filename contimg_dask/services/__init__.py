"""Long-running services (not yet built): the incoming-directory watcher, block processor and
variability analyser."""
