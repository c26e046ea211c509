"""Imaging of one block: engine parameters (tclean, WSClean), FITS products with provenance,
quick-look PNGs. The ``image`` stage (stages/image.py) puts them together."""
