"""DSA-110: site, stations, active antennas, dish and primary beam."""

from contimg_dask.telescope.array import Telescope, load_telescope
from contimg_dask.telescope.beam import SPEED_OF_LIGHT, airy_fwhm_rad, airy_power_beam

__all__ = ["SPEED_OF_LIGHT", "Telescope", "airy_fwhm_rad", "airy_power_beam", "load_telescope"]
