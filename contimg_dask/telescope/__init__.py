"""DSA-110: site, stations, active antennas, dish and primary beam."""

from contimg_dask.telescope.array import Telescope, load_telescope
from contimg_dask.telescope.beam import airy_fwhm_rad, airy_power_beam

__all__ = ["Telescope", "airy_fwhm_rad", "airy_power_beam", "load_telescope"]
