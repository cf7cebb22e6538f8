"""Datasets on disk: ``prepare`` converts the published archives (VOC, SBD, ADE20K) into the
layouts mmseg reads; ``synth`` generates small datasets in those exact layouts;
``bad_samples`` checks each sample as it is loaded (raise, or skip and record)."""
