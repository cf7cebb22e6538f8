"""One finding and one way to print it, for both doctors.

``seglab doctor CONFIG`` (a config key is wrong) and ``seglab data doctor`` (a
file is wrong) report the same thing: a severity, the rule that fired, where,
what is wrong and the fix. Both use this class and this line, so the CLI, the
pre-training check in ``seglab train`` and the logs print every finding alike:
``ERROR [rule] where: message. Fix: fix``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

# "error": the run breaks, is wasted or learns wrong labels for certain; "warning"; "info"
SEVERITY_ORDER = {"error": 0, "warning": 1, "info": 2}


@dataclass
class Finding:
    severity: str  # one of SEVERITY_ORDER
    rule: str
    where: str  # the config key, or the file or folder, the finding is about
    message: str  # what is wrong and why it matters
    fix: str

    def to_dict(self, rule: str = "rule", where: str = "where") -> dict[str, str]:
        """JSON-ready, with each doctor's own names for ``rule`` and ``where``."""
        return {"severity": self.severity, rule: self.rule, where: self.where,
                "message": self.message, "fix": self.fix}


def finding_line(finding: Finding) -> str:
    """A finding as one line: ``ERROR [rule] where: message. Fix: fix``."""
    return (f"{finding.severity.upper()} [{finding.rule}] {finding.where}: "
            f"{finding.message}. Fix: {finding.fix}")


def by_severity(findings: Iterable[Finding]) -> list[Finding]:
    """Errors first, then warnings, then infos; the order within each is kept."""
    return sorted(findings, key=lambda f: SEVERITY_ORDER[f.severity])


def of_severity(findings: Iterable[Finding], severity: str) -> list[Finding]:
    return [f for f in findings if f.severity == severity]


def count_line(findings: Iterable[Finding]) -> str:
    """The closing line of a report: ``2 error(s), 1 warning(s)``."""
    findings = list(findings)
    return (f"{len(of_severity(findings, 'error'))} error(s), "
            f"{len(of_severity(findings, 'warning'))} warning(s)")
