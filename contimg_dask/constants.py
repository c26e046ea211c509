"""Physical constants and the polarisation code tables, defined once for the package."""

from __future__ import annotations

SPEED_OF_LIGHT = 299792458.0  # m/s, exact (SI)

# Polarisation products by name -> AIPS Memo 117 code (as UVH5, UVFITS, MIRIAD and pyuvdata):
# Stokes 1..4, circular -1..-4, linear -5..-8.
POLARIZATION_CODES = {"I": 1, "Q": 2, "U": 3, "V": 4, "RR": -1, "LL": -2, "RL": -3, "LR": -4,
                      "XX": -5, "YY": -6, "XY": -7, "YX": -8}
# AIPS Memo 117 code -> name.
POLARIZATION_NAMES = {code: name for name, code in POLARIZATION_CODES.items()}
# Name -> casacore Stokes enum, as the Measurement Set's POLARIZATION::CORR_TYPE stores it.
CASA_CORRELATION_TYPES = {"RR": 5, "RL": 6, "LR": 7, "LL": 8, "XX": 9, "XY": 10, "YX": 11,
                          "YY": 12}
