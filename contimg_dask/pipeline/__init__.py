"""The orchestrator: runs blocks through the stages in order under the state store's leases,
with retries and circuit breakers, from the CLI or an interactive Dask ``Client`` session; and
the connection to the Dask cluster it runs on."""

from contimg_dask.pipeline.orchestrator import Pipeline
from contimg_dask.pipeline.outcome import BlockOutcome

__all__ = ["BlockOutcome", "Pipeline"]
