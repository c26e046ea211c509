"""Block processing: the Dask graphs behind the stages (rephase, flag, calibration solve and
apply, CASA calibration tables), each over one block store. Stages call these; nothing here
knows the order of stages or the state store."""
