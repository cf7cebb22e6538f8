"""``seglab doctor CONFIG``: the mistakes that cost the seeds days of GPU time, caught in seconds.

Each rule (``seglab.doctor.rules``) reads the resolved config (and, where it
helps, the dataset's split lists or folder listings; never an image) and
reports a finding with a severity, the config key, why it matters and the fix.
Errors are mistakes that waste or break the run for certain; ``seglab train``
refuses them unless told otherwise. The dry-run plan (``seglab.doctor.plan``)
says what the run will actually do: images per epoch, iterations, the LR after
``auto_scale_lr``, warm-up length and how often it validates and saves, next to
the official mmseg recipe for the model (``seglab.doctor.recipes``). This module
runs the rules and prints the report.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from mmengine.config import Config

from seglab.doctor.finding import Finding, by_severity, count_line, finding_line, of_severity
from seglab.doctor.plan import Facts, Plan, build_plan, fill_cadence
from seglab.doctor.rules import RULES


@dataclass
class DoctorReport:
    config: str
    plan: Plan
    findings: list[Finding] = field(default_factory=list)

    @property
    def errors(self) -> list[Finding]:
        return of_severity(self.findings, "error")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; a finding's ``where`` is written as ``key`` (the config key)."""
        return {"config": self.config, "plan": asdict(self.plan),
                "findings": [f.to_dict(where="key") for f in self.findings]}


def examine_config(cfg: Config, config_path: str, gpus: int | None = None) -> DoctorReport:
    """Apply every rule to a resolved config; reads split lists, never images."""
    from mmengine.registry import init_default_scope

    init_default_scope(cfg.get("default_scope", "mmseg"))
    plan, datasets = build_plan(cfg, gpus)
    facts = Facts(cfg, plan, gpus, datasets)
    fill_cadence(facts)
    findings = by_severity(finding for check in RULES for finding in check(facts))
    return DoctorReport(config_path, plan, findings)


def _fmt(value: float | None, unit: str = "") -> str:
    return "unknown" if value is None else f"{value:,}{unit}"


def plan_text(plan: Plan) -> list[str]:
    where = {"counted": "counted from the split lists", "published": "published size; "
             "data not found on this machine", "unknown": "data not found"}
    lines = [
        f"  train images      {_fmt(plan.train_images)} ({where[plan.train_images_source]})",
        f"  world x batch     {plan.world_size} x {plan.batch_per_gpu} = {plan.total_batch} "
        f"(world size from {plan.world_size_source})",
        f"  iterations/epoch  {_fmt(plan.iters_per_epoch)}",
    ]
    length = (f"{plan.max_epochs} epochs" if plan.loop == "epoch" else f"{plan.max_iters} iters")
    lines.append(f"  total             {length} = {_fmt(plan.total_iters)} iterations, "
                 f"{_fmt(plan.images_seen)} images seen")
    if plan.recipe is not None and plan.images_seen is not None:
        r = plan.recipe
        lines.append(f"  official recipe   {r.config}: {r.max_iters:,} iters x {r.total_batch} = "
                     f"{r.images:,} images ({plan.images_seen / r.images:.2f}x), lr {r.lr:g}")
    scale = ("auto_scale_lr on" if plan.auto_scale_lr else "auto_scale_lr off")
    lines += [
        f"  learning rate     {_fmt(plan.lr)} -> effective {_fmt(plan.effective_lr)} ({scale})",
        f"  warm-up           {_fmt(plan.warmup_iters)} iterations",
        f"  validation        {plan.val_every}",
        f"  checkpoints       {plan.checkpoint_every}",
    ]
    return lines


def report_text(report: DoctorReport) -> str:
    lines = [f"seglab doctor: {report.config}", "plan:", *plan_text(report.plan)]
    lines += [finding_line(f) for f in report.findings]
    lines.append(count_line(report.findings))
    return "\n".join(lines)
