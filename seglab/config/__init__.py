"""Configs as data: load and override (``loading``), read their structure (``walk``), fit
them to the machine (``adapt``), diff them (``diff``), and the ADE20K model zoo (``zoo``)."""
