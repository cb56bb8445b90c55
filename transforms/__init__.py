"""Pure functions on Polars frames: no I/O, no clock, no globals.

Anything time-dependent takes ``now`` as an argument so tests are exact.
"""
