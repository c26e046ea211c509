"""Forced photometry of image products at catalogue positions, per-epoch flux
normalisation, light curves and variability candidates (docs/photometry.md,
docs/variability.md). The array algorithms are in ``ops`` (forced_photometry,
background_mesh, flux_normalisation, variability); this package reads images, keeps the
Parquet tables and talks to the state store."""
