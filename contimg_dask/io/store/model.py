"""The block store's own data model, declared once: what our stages add to the MSv4 layout.

xradio declares MSv4 as typed schema classes that both document and validate; this module
does the same for what MSv4 does not define and we store:

- :data:`SOLUTIONS`: the calibration solutions store (``SOLUTIONS.zarr``);
- :data:`CALIBRATION_NODE`: ``<msv4>/calibration_xds``, the gains applied to a block on its
  own grid;
- :data:`FLAG_VERSION`: one saved flag version (``contimg.flag_versions`` of the visibility
  dataset);
- :data:`DATA_GROUP`: one data group entry (MSv4 ``data_groups``, or ``contimg.derived_groups``
  for a group whose visibilities are rotated on the fly).

Each model builds its object (:meth:`DatasetModel.build`, :meth:`RecordModel.build`: the one
constructor, checked on write) and checks it when read (:meth:`DatasetModel.check`,
:meth:`RecordModel.check`), raising :class:`StoreModelError` naming the store and the field.
:meth:`DatasetModel.describe` renders the model as the tables of docs/block-store.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from contimg_dask.errors import InputError

ANT_F_P = ("antenna_name", "frequency", "polarization")
T_A_P = ("gain_time", "antenna_name", "polarization")
A_P = ("antenna_name", "polarization")
UNIX_TIME = {"units": "s", "scale": "utc", "format": "unix"}
TOPO_HZ = {"units": "Hz", "observer": "TOPO"}


class StoreModelError(InputError):
    """A store's content does not follow its declared data model."""


@dataclass(frozen=True)
class Variable:
    """An array: its dimensions, dtype (a NumPy dtype name, or a kind letter such as ``U``
    for strings of any length), meaning and the attributes it is written with."""

    dims: tuple[str, ...]
    dtype: str
    doc: str
    attrs: Mapping[str, Any] = field(default_factory=dict)

    def issues(self, name: str, array: xr.DataArray) -> list[str]:
        found = []
        if tuple(array.dims) != self.dims:
            found.append(f"{name} has dimensions {tuple(array.dims)}, expected {self.dims}")
        dtype = array.dtype
        ok = dtype.kind == self.dtype if len(self.dtype) == 1 else dtype == np.dtype(self.dtype)
        if not ok:
            found.append(f"{name} is {dtype}, expected {self.dtype}")
        return found


@dataclass(frozen=True)
class Field:
    """An attribute or a record's field: its Python type(s), meaning, and whether it may be
    absent."""

    types: type | tuple[type, ...]
    doc: str
    optional: bool = False


@dataclass(frozen=True)
class DatasetModel:
    """A dataset of the store: its ``type`` attribute, coordinates, data variables and
    required attributes."""

    name: str
    type: str
    doc: str
    coords: Mapping[str, Variable]
    data_vars: Mapping[str, Variable]
    attrs: Mapping[str, Field] = field(default_factory=dict)

    def build(self, coords: Mapping[str, Any], data_vars: Mapping[str, Any],
              attrs: Mapping[str, Any] | None = None, where: str | Path | None = None
              ) -> xr.Dataset:
        """The dataset from its arrays (cast to the declared dtypes, with the declared
        dimensions and attributes), checked."""

        def variable(spec: Variable, values: Any) -> tuple:
            values = np.asarray(values)
            if len(spec.dtype) > 1:
                values = values.astype(spec.dtype, copy=False)
            return spec.dims, values, dict(spec.attrs)

        ds = xr.Dataset(
            data_vars={k: variable(self.data_vars[k], v) for k, v in data_vars.items()},
            coords={k: variable(self.coords[k], v) for k, v in coords.items()},
            attrs={"type": self.type, **(attrs or {})})
        return self.check(ds, where)

    def issues(self, ds: xr.Dataset) -> list[str]:
        """What in ``ds`` departs from the model (empty if nothing)."""
        found = []
        if ds.attrs.get("type") != self.type:
            found.append(f"attribute type is {ds.attrs.get('type')!r}, expected {self.type!r}")
        for kind, specs, present in (("coordinate", self.coords, ds.coords),
                                     ("variable", self.data_vars, ds.data_vars)):
            for name, spec in specs.items():
                if name not in present:
                    found.append(f"{kind} {name} is missing")
                else:
                    found += spec.issues(name, present[name])
        for name, spec in self.attrs.items():
            found += _field_issues(f"attribute {name}", ds.attrs, name, spec)
        return found

    def check(self, ds: xr.Dataset, where: str | Path | None) -> xr.Dataset:
        """``ds`` if it follows the model.

        Raises
        ------
        StoreModelError
            Naming the store (``where``) and every field that departs from the model.
        """
        found = self.issues(ds)
        if found:
            raise StoreModelError(f"not a valid {self.name}: {'; '.join(found)}", file=where)
        return ds

    def describe(self) -> str:
        """The model as markdown tables (for docs/block-store.md)."""
        lines = [f"**{self.name}** (`type = {self.type}`): {self.doc}", "",
                 "| name | dimensions | dtype | meaning |", "| --- | --- | --- | --- |"]
        for name, spec in {**self.coords, **self.data_vars}.items():
            lines.append(f"| `{name}` | {', '.join(spec.dims)} | {spec.dtype} | {spec.doc} |")
        lines += [f"| attribute `{name}` | | {_type_names(spec.types)} | {spec.doc} |"
                  for name, spec in self.attrs.items()]
        return "\n".join(lines)


@dataclass(frozen=True)
class RecordModel:
    """A record (a JSON object) stored in a dataset's attributes."""

    name: str
    doc: str
    fields: Mapping[str, Field]

    def build(self, where: str | Path | None = None, **values: Any) -> dict[str, Any]:
        """The record from its fields (None values left out), checked."""
        record = {k: v for k, v in values.items() if v is not None}
        unknown = sorted(set(record) - set(self.fields))
        if unknown:
            raise StoreModelError(f"{self.name} has no field(s) {unknown}", file=where)
        return self.check(record, where, "")

    def check(self, record: Any, where: str | Path | None, label: str) -> dict[str, Any]:
        """``record`` if it follows the model.

        Raises
        ------
        StoreModelError
            Naming the store (``where``), the record (``label``) and the fields at fault.
        """
        if not isinstance(record, dict):
            raise StoreModelError(f"{self.name} {label} is {type(record).__name__}, not a "
                                  "record", file=where)
        found = []
        for name, spec in self.fields.items():
            found += _field_issues(f"field {name}", record, name, spec)
        if found:
            raise StoreModelError(f"{self.name} {label}: {'; '.join(found)}".replace("  ", " "),
                                  file=where)
        return record

    def describe(self) -> str:
        """The model as a markdown table (for docs/block-store.md)."""
        lines = [f"**{self.name}**: {self.doc}", "", "| field | type | meaning |",
                 "| --- | --- | --- |"]
        lines += [f"| `{name}` | {_type_names(spec.types)}{' (optional)' * spec.optional} | "
                  f"{spec.doc} |" for name, spec in self.fields.items()]
        return "\n".join(lines)


def _type_names(types: type | tuple[type, ...]) -> str:
    return " or ".join(t.__name__ for t in (types if isinstance(types, tuple) else (types,)))


def _field_issues(label: str, values: Mapping[str, Any], name: str, spec: Field) -> list[str]:
    if name not in values:
        return [] if spec.optional else [f"{label} is missing"]
    value = values[name]
    if value is None and spec.optional:
        return []
    types = spec.types if isinstance(spec.types, tuple) else (spec.types,)
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
        return [f"{label} is {type(value).__name__}, expected {_type_names(spec.types)}"]
    return []


SOLUTIONS = DatasetModel(
    name="calibration solutions store",
    type="calibration_solutions",
    doc="one zarr v3 group per solve. g = GAIN(t) · BANDPASS(ν) is an antenna's complex "
        "voltage gain in the block store's convention V_ab = conj(g_a) g_b M_ab, phases "
        "referenced to `contimg.refant`; NaN where flagged.",
    coords={
        "antenna_name": Variable(("antenna_name",), "U", "antenna names"),
        "frequency": Variable(("frequency",), "float64", "channel frequencies, Hz, ascending, "
                              "TOPO", TOPO_HZ),
        "polarization": Variable(("polarization",), "U", "correlation names (XX, YY, ...)"),
        "gain_time": Variable(("gain_time",), "float64", "centres of the gain intervals, Unix "
                              "s (UTC)", UNIX_TIME),
        "gain_time_start": Variable(("gain_time",), "float64", "interval starts, Unix s"),
        "gain_time_end": Variable(("gain_time",), "float64", "interval ends, Unix s"),
    },
    data_vars={
        "BANDPASS": Variable(ANT_F_P, "complex64", "bandpass per channel"),
        "BANDPASS_FLAG": Variable(ANT_F_P, "bool", "bandpass solution flagged"),
        "BANDPASS_SNR": Variable(ANT_F_P, "float32", "bandpass solution SNR"),
        "BANDPASS_CHI2": Variable(("frequency", "polarization"), "float32",
                                  "reduced χ² per visibility of the bandpass solve"),
        "GAIN": Variable(T_A_P, "complex64", "gains per `calibration.gain_interval_s`"),
        "GAIN_FLAG": Variable(T_A_P, "bool", "gain solution flagged"),
        "GAIN_SNR": Variable(T_A_P, "float32", "gain solution SNR"),
        "GAIN_CHI2": Variable(("gain_time", "polarization"), "float32",
                              "reduced χ² of the gain solve"),
        "GAIN_BLOCK": Variable(A_P, "complex64", "gains over the whole block (applied to "
                               "other blocks of the strip)"),
        "GAIN_BLOCK_FLAG": Variable(A_P, "bool", "whole-block gain flagged"),
        "GAIN_BLOCK_SNR": Variable(A_P, "float32", "whole-block gain SNR"),
    },
)

SOLUTIONS_PROVENANCE = RecordModel(
    name="solutions provenance",
    doc="the `contimg` attribute of a solutions store (what apply checks a block against).",
    fields={
        "block_id": Field(str, "the calibrator block's id"),
        "data_group": Field(str, "the data group solved on"),
        "block_start_unix": Field((float, int), "start of the solved block, Unix s"),
        "block_end_unix": Field((float, int), "end of the solved block, Unix s"),
        "pointing_dec_rad": Field((float, int), "the block's pointing declination, rad"),
        "calibrator": Field(dict, "the calibrator (at least its `name`)"),
        "refant": Field(str, "reference antenna"),
        "quality": Field(dict, "flagged fractions, median SNRs and χ² of the solutions"),
    },
)


def solutions_dataset(*, antenna_names: list[str], freq_hz: np.ndarray,
                      polarizations: list[str], gain_time_start: np.ndarray,
                      gain_time_end: np.ndarray, bandpass: np.ndarray,
                      bandpass_flag: np.ndarray, bandpass_snr: np.ndarray,
                      bandpass_chi2: np.ndarray, gain: np.ndarray, gain_flag: np.ndarray,
                      gain_snr: np.ndarray, gain_chi2: np.ndarray, gain_block: np.ndarray,
                      gain_block_flag: np.ndarray, gain_block_snr: np.ndarray,
                      gain_time: np.ndarray | None = None) -> xr.Dataset:
    """A solutions store's dataset (arrays in the dimension order of :data:`SOLUTIONS`),
    checked; ``gain_time`` defaults to the intervals' centres. Its provenance (the
    ``contimg`` attribute, :data:`SOLUTIONS_PROVENANCE`) is added by the caller and checked
    when the store is written (:func:`check_solutions`)."""
    start, end = np.asarray(gain_time_start, np.float64), np.asarray(gain_time_end, np.float64)
    return SOLUTIONS.build(
        coords={"antenna_name": np.array(antenna_names), "frequency": freq_hz,
                "polarization": np.array(polarizations),
                "gain_time": 0.5 * (start + end) if gain_time is None else gain_time,
                "gain_time_start": start, "gain_time_end": end},
        data_vars={"BANDPASS": bandpass, "BANDPASS_FLAG": bandpass_flag,
                   "BANDPASS_SNR": bandpass_snr, "BANDPASS_CHI2": bandpass_chi2,
                   "GAIN": gain, "GAIN_FLAG": gain_flag, "GAIN_SNR": gain_snr,
                   "GAIN_CHI2": gain_chi2, "GAIN_BLOCK": gain_block,
                   "GAIN_BLOCK_FLAG": gain_block_flag, "GAIN_BLOCK_SNR": gain_block_snr})


def check_solutions(ds: xr.Dataset, where: str | Path | None) -> xr.Dataset:
    """``ds`` if it is a solutions store's dataset with its provenance (on write and open).

    Raises
    ------
    StoreModelError
        Naming the store and the fields at fault.
    """
    SOLUTIONS.check(ds, where)
    SOLUTIONS_PROVENANCE.check(ds.attrs.get("contimg"), where, "(attribute contimg)")
    return ds


CALIBRATION_NODE = DatasetModel(
    name="calibration node",
    type="contimg_calibration",
    doc="`<msv4>/calibration_xds`: the calibration applied to a block, on the block's own "
        "grid (the solutions interpolated to its integrations and channels; NaN where a "
        "solution is flagged). Readers compute the corrected data from it on the fly.",
    coords={
        "time": Variable(("time",), "float64", "the block's integrations, Unix s"),
        "frequency": Variable(("frequency",), "float64", "the block's channels, Hz"),
        "antenna_name": Variable(("antenna_name",), "U", "the block's antennas (antenna_xds "
                                 "order)"),
        "polarization": Variable(("polarization",), "U", "correlation names"),
    },
    data_vars={
        "GAIN": Variable(("time", "antenna_name", "polarization"), "complex128",
                         "gain at each integration"),
        "BANDPASS": Variable(("frequency", "antenna_name", "polarization"), "complex128",
                             "bandpass at each channel"),
    },
    attrs={
        "data_group": Field(str, "the data group it corrects"),
        "solutions": Field(str, "the solutions store applied (absolute path)"),
        "solutions_block": Field(str, "the block the solutions were solved on"),
        "calibrator": Field(str, "the calibrator of the solutions"),
        "materialised": Field(bool, "whether the `corrected` data group was written"),
        "applied": Field(str, "when (ISO 8601 UTC)"),
    },
)

FLAG_VERSION = RecordModel(
    name="flag version",
    doc="one entry of `contimg.flag_versions` (name -> record) of the visibility dataset. "
        "`FLAG` holds the flags as ingested (version `ingest`); each flagging run writes "
        "`FLAG_<name>` completely, then makes it the `flag` of every data group.",
    fields={
        "variable": Field(str, "the FLAG variable holding the version"),
        "created": Field(str, "when (ISO 8601 UTC)"),
        "description": Field(str, "what made it"),
        "parameters": Field(dict, "the flagging parameters used", optional=True),
        "fractions": Field(dict, "flagged fractions: block, per_subband, per_antenna, "
                                 "per_channel", optional=True),
    },
)

DATA_GROUP = RecordModel(
    name="data group",
    doc="one entry of the visibility dataset's `data_groups` (stored) or of "
        "`contimg.derived_groups` (visibilities rotated on the fly): the variable of each "
        "role.",
    fields={
        "correlated_data": Field(str, "visibilities (for a derived group: the stored ones it "
                                      "is rotated from)"),
        "flag": Field(str, "flags (the active flag version)"),
        "weight": Field(str, "weights"),
        "uvw": Field(str, "UVW (m)"),
        "field_and_source": Field(str, "the field node (phase centre)"),
        "description": Field(str, "what it is"),
        "date": Field(str, "when it was made (ISO 8601 UTC)"),
        "rotated_from_uvw": Field(str, "derived groups: the UVW variable the stored "
                                       "visibilities are phased for", optional=True),
        "derived_from": Field(str, "the group it was made from", optional=True),
    },
)

#: The roles of a data group whose value names a variable of the visibility dataset.
DATA_GROUP_VARIABLES = ("correlated_data", "flag", "weight", "uvw", "rotated_from_uvw")


def check_data_group(entry: Any, name: str, variables: Mapping[str, Any] | None,
                     where: str | Path | None) -> dict[str, Any]:
    """A data group's entry if it follows :data:`DATA_GROUP` and (given the dataset's
    ``variables``) names variables that exist."""
    DATA_GROUP.check(entry, where, f"'{name}'")
    if variables is not None:
        absent = [f"{role} = {entry[role]}" for role in DATA_GROUP_VARIABLES
                  if role in entry and entry[role] not in variables]
        if absent:
            raise StoreModelError(f"data group '{name}' names variables the store lacks: "
                                  f"{', '.join(absent)}", file=where)
    return entry
