"""Realistic DSA-110 observation blocks with known truth (``contimg simulate``)."""

from contimg_dask.simulate.block import Faults, SimulationOptions, plan_blocks, simulate_blocks

__all__ = ["Faults", "SimulationOptions", "plan_blocks", "simulate_blocks"]
