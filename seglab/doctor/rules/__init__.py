"""The config doctor's rules: the registry here, the rules by topic in the modules below.

A rule is a function of the ``Facts`` (the resolved config and its plan) that
yields ``Finding``s; ``@rule`` registers it in ``RULES``. Importing this package
imports every rule module, so ``RULES`` is complete. The modules are imported
in a fixed order, which is the order of findings of one severity in a report:
``schedule`` (sampler, schedulers, validation, checkpoints, save_best),
``data`` (classes and labels), ``weights`` (pretrained weights), ``losses``,
``lr`` (learning rate against the recipe, fine-tuning and resume), ``keys`` (every
``type=`` dict's keys against its class's signature).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from seglab.doctor.finding import Finding
from seglab.doctor.plan import Facts

Rule = Callable[[Facts], Iterator[Finding]]
RULES: list[Rule] = []


def rule(fn: Rule) -> Rule:
    RULES.append(fn)
    return fn


from seglab.doctor.rules import schedule, data, weights, losses, lr, keys  # noqa: E402, F401, I001
