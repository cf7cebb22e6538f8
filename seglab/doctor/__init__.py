"""The doctors: what is wrong with a config or a dataset, found before training does.

``config_doctor`` (``seglab doctor CONFIG``) runs the rules in ``rules/`` over a
resolved config and its ``plan``, compared with mmseg's ``recipes``; ``dataset``
(``seglab data doctor``, and ``seglab train``/``test`` before building) decodes every
image/mask pair through ``file_check`` (all cores, cached per file). Both report
``finding.Finding``s, printed by one formatter.
"""
