"""Build contimg_dask/science/data/calibrators.csv from CASA's own flux-standard tables.

    python scripts/build_calibrator_catalog.py /path/to/casadata/__data__

The tables come with the ``casadata`` package (pip; not a run-time dependency of
contimg-dask): ``nrao/VLA/standards/fluxcalibrator.data`` (J2000 positions, the list CASA's
``setjy`` recognises) and ``nrao/VLA/standards/PerleyButler2017Coeffs`` (Perley & Butler 2017,
ApJS 230, 7: log10 S[Jy] = sum_k a_k log10(nu/GHz)^k; for the variable sources the newest
epoch, 2017.0, is used). Each calibrator's flux density at 1.4 GHz and its spectral index
(d log S / d log nu at 1.4 GHz) are written.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from casacore.tables import table

# Compact (point-like at DSA-110's ~15 arcsec resolution), dec -10..+80 deg. Excluded from the
# standards: the extended sources (Cas A, Cyg A, Tau A, Vir A, Her A, 3C353, 3C123) and those
# south of dec -10 deg.
CALIBRATORS = ("3C48", "3C138", "3C147", "3C196", "3C286", "3C295", "3C380")
REFERENCE_GHZ = 1.4
OUT = Path(__file__).resolve().parents[1] / "contimg_dask/science/data/calibrators.csv"


def main(data: Path) -> None:
    standards = data / "nrao/VLA/standards"
    positions = table(str(standards / "fluxcalibrator.data"), ack=False)
    coeffs = table(str(standards / "PerleyButler2017Coeffs"), ack=False)
    names = positions.getcol("Name")
    epochs = coeffs.getcol("Epoch")
    newest = int(np.argmax(epochs))
    x = np.log10(REFERENCE_GHZ)
    lines = [
        "# Perley-Butler 2017 flux-density standards (Perley & Butler 2017, ApJS 230, 7),",
        "# as tabulated in CASA's casadata package: positions from",
        "# nrao/VLA/standards/fluxcalibrator.data, flux density at 1.4 GHz and spectral index",
        "# (dlogS/dlognu at 1.4 GHz) from PerleyButler2017Coeffs (epoch "
        f"{epochs[newest]:.1f} for the variable sources).",
        "# Built by scripts/build_calibrator_catalog.py.",
        "name,ra_deg,dec_deg,flux_jy,ref_freq_hz,spectral_index",
    ]
    for name in CALIBRATORS:
        row = names.index(name)
        ra = np.degrees(positions.getcell("RA_J2000", row)) % 360.0
        dec = np.degrees(positions.getcell("Dec_J2000", row))
        a = np.asarray(coeffs.getcell(f"{name}_coeffs", newest), float)
        powers = np.arange(len(a))
        log_s = float(np.sum(a * x**powers))
        alpha = float(np.sum(a[1:] * powers[1:] * x ** (powers[1:] - 1)))
        lines.append(f"{name},{ra:.7f},{dec:.7f},{10**log_s:.3f},{REFERENCE_GHZ * 1e9:.6g},"
                     f"{alpha:.4f}")
    OUT.write_text("\n".join(lines) + "\n")
    print(OUT.read_text())


if __name__ == "__main__":
    main(Path(sys.argv[1]))
