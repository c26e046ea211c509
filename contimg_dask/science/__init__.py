"""Science stages (not yet built): imaging through CASA tclean, primary-beam correction,
mosaicking, sky models and catalogues, forced photometry, variability."""
