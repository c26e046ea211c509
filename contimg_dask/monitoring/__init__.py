"""Monitoring (not yet built): metrics, alert rules, health checks and the Bokeh pipeline
dashboard beside Dask's own."""
