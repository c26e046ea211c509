"""RFI and data flagging on one subband chunk (Numba kernels on in-memory arrays).

Arrays are shaped (time, baseline, frequency, polarization). The steps, in the order DSA-110
runs them, each switchable by configuration:

1. zeros and non-finite values;
2. autocorrelations (flagged for imaging; the data stay in the store);
3. an amplitude clip;
4. RFI seen by the whole array at once (broadband bursts, persistent narrowband emitters):
   time-frequency cells where the median over baselines of the normalised amplitude is an
   outlier;
5. bad antennas: autocorrelation power far from the array's median, noisy on every baseline,
   or already mostly flagged;
6. RFI: SumThreshold (Offringa et al. 2010, as AOFlagger) in the time-frequency plane of every
   baseline and polarization, on amplitude residuals from a masked Gaussian background,
   iterated with the background re-estimated without what was flagged;
7. a robust MAD sigma clip on the same residuals (with only 24 integrations, SumThreshold
   along time is weak: this catches the rest);
8. extension: neighbours of flagged samples whose residual exceeds a lower threshold
   (residuals are one-sided throughout: interference adds power), and
   whole channels or integrations that are mostly flagged.

Implementation: steps 6-8 run fused, one pass over the chunk per stage, on blocks of
``BLOCK_BASELINES`` cross-correlations whose (baseline, polarization) planes are the
innermost axis of a (time, frequency, plane) array, so that every operation on a plane runs
on all planes of the block at once (SIMD). The only chunk-sized temporaries are the residuals
(float32, half the size of the visibilities) and one byte of state per visibility.

Modules: ``screening`` (steps 1-5), ``rfi_detection`` (steps 6-8), ``parameters``; the
order statistics they use are ``contimg_dask.ops.order_statistics``.
"""

from __future__ import annotations

from contimg_dask.ops.flagging.parameters import FlagParameters
from contimg_dask.ops.flagging.rfi_detection import detect_rfi, flagged_per_channel
from contimg_dask.ops.flagging.screening import flagged_per_baseline, screen_subband

__all__ = ["FlagParameters", "detect_rfi", "flagged_per_baseline", "flagged_per_channel",
           "screen_subband"]
