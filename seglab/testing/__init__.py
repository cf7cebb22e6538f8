"""Harnesses the test suite and ``seglab zoo`` share: ``smoke`` shrinks any config to a
seconds-long CPU run on generated data."""
