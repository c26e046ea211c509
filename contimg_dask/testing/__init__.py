"""Verification-only code: references and drivers that tests and benchmarks use, never the
pipeline (the layering check forbids any runtime package to import this one). It lives in the
package, not under tests/, because CASA worker processes import their functions by module
name wherever the package is installed."""
