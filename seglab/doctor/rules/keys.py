"""Rule on config keys: every ``type=`` dict against the constructor it will be given to.

A typo'd key (``--cfg-options model.decode_head.num_clases=21``) otherwise ends in a
30-frame ``TypeError`` from deep inside mmseg's builder. This rule finds the class each
``type=`` names, in the registry its builder uses (``MODELS`` for the model and its parts,
``TRANSFORMS`` for pipelines, ``OPTIMIZERS``, ``PARAM_SCHEDULERS``, ``HOOKS``, ...) under
the config's default scope (or the dict's ``_scope_``), and reports each key the
constructor cannot take, with the closest valid name.

What a class accepts is the union of the ``__init__`` signatures along its MRO, for as
long as each ``__init__`` hands its ``**kwargs`` on to the next one (``super().__init__(
**kwargs)`` or ``Base.__init__(self, **kwargs)``, read from the source). Where ``**kwargs``
go anywhere else (stored, looked into, swallowed, sent to another builder), or a decorator
or metaclass stands between the config and ``__init__``, the keys are unknowable and the
dict is not judged: an error from this rule must never stop a config that builds.
``RandomResize`` and ``RandomChoiceResize`` are the known exception: their ``**kwargs``
go to the ``resize_type`` transform, whose keys are added. The keys the builders take out
before calling the constructor (``type``, ``_scope_``, a hook's ``priority``, a
scheduler's ``convert_to_iter_based``, the optim wrapper's ``constructor`` and
``paramwise_cfg``, a norm layer's ``requires_grad``) are accepted too. Types not in the
registry are left to the build (or other rules) to report.
"""

from __future__ import annotations

import ast
import difflib
import functools
import inspect
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from seglab.config.walk import type_name
from seglab.doctor.finding import Finding
from seglab.doctor.plan import Facts
from seglab.doctor.rules import rule

# build_from_cfg pops these from every dict before calling the constructor
ALWAYS_POPPED = frozenset({"type", "_scope_"})
# model parts that are built by mmengine's TASK_UTILS, not MODELS (pixel samplers,
# mmdet's assigners and match costs)
TASK_UTIL_KEYS = frozenset({"sampler", "assigner", "match_costs", "bbox_coder",
                            "prior_generator", "point_generator", "iou_calculator"})
# model parts never judged: initialisation is not a constructor call
SKIPPED_MODEL_KEYS = frozenset({"init_cfg"})
# classes whose **kwargs go to a transform they build: class -> (key naming it, default)
FORWARDS = {"mmcv.transforms.processing.RandomResize": ("resize_type", "Resize"),
            "mmcv.transforms.processing.RandomChoiceResize": ("resize_type", "Resize")}
DATALOADER_POPPED = frozenset({"dataset", "sampler", "batch_sampler", "collate_fn",
                               "worker_init_fn", "num_batch_per_epoch",
                               "disable_subprocess_warning"})


@dataclass
class Site:
    """One dict that a builder turns into a constructor call."""

    where: str  # the config key of the dict
    cfg: dict
    registry: Any  # an mmengine root registry; None with ``target`` set
    scope: str | None  # the dict's ``_scope_`` or one inherited; None: the default scope
    popped: frozenset[str] = frozenset()  # keys the builder takes out first
    default_type: str | None = None  # what the builder uses when ``type`` is absent
    target: Any = None  # a fixed constructor (torch's DataLoader)
    scoped: bool = True  # False: the builder asks the root registry (FUNCTIONS.get)


# ---------------------------------------------------------------- what a constructor takes

_TERMINAL_NAMES = {("builtins", "object"), ("torch.nn.modules.module", "Module")}


def _terminal(owner: type) -> bool:
    """``object`` takes nothing; ``nn.Module.__init__(*args, **kwargs)`` refuses any
    keyword (it only exists for cooperative ``call_super_init``)."""
    return (owner.__module__, owner.__qualname__) in _TERMINAL_NAMES


def _next_init(mro: tuple[type, ...], start: int) -> int | None:
    for i in range(start, len(mro)):
        if "__init__" in vars(mro[i]):
            return i
    return None


def _parents(tree: ast.AST) -> dict[ast.AST, ast.AST]:
    return {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}


def _kwargs_target(owner: type, init: Any, name: str) -> str | type | None:
    """Where ``__init__``'s ``**name`` goes: ``"super"`` (the next ``__init__`` in the
    MRO), a base class (``Base.__init__(self, **kwargs)``), or None: elsewhere, nowhere,
    or the source cannot be read."""
    try:
        source = textwrap.dedent(inspect.getsource(init))
        tree = ast.parse(source)
    except (OSError, TypeError, SyntaxError, IndentationError):
        return None
    func = next((n for n in ast.walk(tree)
                 if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))), None)
    if func is None:
        return None
    parents = _parents(func)
    targets: set[Any] = set()
    uses = [n for n in ast.walk(func) if isinstance(n, ast.Name) and n.id == name]
    for use in uses:
        keyword = parents.get(use)
        call = parents.get(keyword)
        if not (isinstance(keyword, ast.keyword) and keyword.arg is None
                and isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)
                and call.func.attr == "__init__"):
            return None  # stored, looked into, or sent to another callable
        base = call.func.value
        if isinstance(base, ast.Call) and isinstance(base.func, ast.Name) \
                and base.func.id == "super":
            if base.args and not (isinstance(base.args[0], ast.Name)
                                  and base.args[0].id == owner.__name__):
                return None  # super(OtherClass, self): skips part of the MRO
            targets.add("super")
        elif isinstance(base, ast.Name):
            cls = getattr(init, "__globals__", {}).get(base.id)
            if not inspect.isclass(cls):
                return None
            targets.add(cls)
        else:
            return None
    return targets.pop() if len(targets) == 1 else None  # unused or sent to two places


def _keywords(sig: inspect.Signature, skip_first: bool) -> set[str]:
    params = list(sig.parameters.values())
    if skip_first and params and params[0].kind in (inspect.Parameter.POSITIONAL_ONLY,
                                                    inspect.Parameter.POSITIONAL_OR_KEYWORD):
        params = params[1:]
    return {p.name for p in params if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                                 inspect.Parameter.KEYWORD_ONLY)}


def _var_keyword(sig: inspect.Signature) -> str | None:
    return next((p.name for p in sig.parameters.values()
                 if p.kind is inspect.Parameter.VAR_KEYWORD), None)


def _class_keys(cls: type) -> frozenset[str] | None:
    if type(cls).__call__ is not type.__call__:
        return None  # a metaclass builds instances its own way
    mro = cls.__mro__
    names: set[str] = set()
    i = _next_init(mro, 0)
    while i is not None:
        owner = mro[i]
        if _terminal(owner):
            return frozenset(names)
        init = vars(owner)["__init__"]
        if hasattr(init, "__wrapped__"):
            return None  # a decorator may take or rename keys (mmcv's deprecated_api_warning)
        try:
            sig = inspect.signature(init)
        except (TypeError, ValueError):
            return None
        names |= _keywords(sig, skip_first=True)
        kwargs = _var_keyword(sig)
        if kwargs is None:
            return frozenset(names)
        target = _kwargs_target(owner, init, kwargs)
        if target is None:
            return None
        if target == "super":
            i = _next_init(mro, i + 1)
        else:
            start = _next_init(target.__mro__, 0)
            init_owner = None if start is None else target.__mro__[start]
            if init_owner not in mro or mro.index(init_owner) <= i:
                return None
            i = mro.index(init_owner)
    return frozenset(names)


def _function_keys(fn: Any) -> frozenset[str] | None:
    if isinstance(fn, functools.partial):
        fn = fn.func
    if hasattr(fn, "__wrapped__"):
        return None
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    return None if _var_keyword(sig) else frozenset(_keywords(sig, skip_first=False))


@functools.cache
def _cached_keys(target: Any) -> frozenset[str] | None:
    return _class_keys(target) if inspect.isclass(target) else _function_keys(target)


def accepted_keys(target: Any) -> frozenset[str] | None:
    """The keywords ``target(**cfg)`` accepts; None when they cannot be known."""
    try:
        return _cached_keys(target)
    except TypeError:  # unhashable callable
        return _class_keys(target) if inspect.isclass(target) else _function_keys(target)


# ---------------------------------------------------------------- finding the class

def _resolve(registry: Any, type_name: Any, scope: str | None, scoped: bool = True) -> Any:
    """The class (or function) a builder would call, as ``build_from_cfg`` finds it:
    the registry of the current (or the dict's) scope, then its parents."""
    if not isinstance(type_name, str):
        return type_name if callable(type_name) else None
    try:
        if not scoped:
            return registry.get(type_name)
        with registry.switch_scope_and_registry(scope) as current:
            return current.get(type_name)
    except Exception:  # an unknown scope or name is the build's to report
        return None


def _display(target: Any) -> str:
    return getattr(target, "__name__", None) or type(target).__name__


def _qualified(target: Any) -> str:
    return f"{getattr(target, '__module__', '')}.{getattr(target, '__qualname__', '')}"


def _forwarding_keys(site: Site, target: type) -> frozenset[str] | None:
    """RandomResize(scale, ratio_range, resize_type='Resize', **resize_kwargs) builds
    ``resize_type`` with the other keys: its own arguments and the resize's."""
    type_key, default = FORWARDS[_qualified(target)]
    own = _keywords(inspect.signature(target.__init__), skip_first=True)
    inner = _resolve(site.registry, site.cfg.get(type_key, default), site.scope)
    inner_keys = None if inner is None else accepted_keys(inner)
    return None if inner_keys is None else frozenset(own | inner_keys)


def _site_findings(site: Site) -> Iterator[Finding]:
    cfg = site.cfg
    target = site.target
    if target is None:
        type_name = cfg.get("type", site.default_type)
        if type_name is None:
            return
        target = _resolve(site.registry, type_name, site.scope, site.scoped)
    if target is None:
        return
    keys = _forwarding_keys(site, target) if _qualified(target) in FORWARDS else \
        accepted_keys(target)
    if keys is None:
        return
    allowed = keys | site.popped | ALWAYS_POPPED
    for key in cfg:
        if not isinstance(key, str) or key in allowed:
            continue
        close = difflib.get_close_matches(key, sorted(keys), n=1)
        if close:
            fix = f"{close[0]}?"
        else:
            fix = (f"remove it; {_display(target)} takes "
                   + ", ".join(sorted(k for k in keys if not k.startswith("_"))))
        yield Finding("error", "unknown-key", f"{site.where}.{key}",
                      f"{_display(target)} has no argument {key!r}", fix)


# ---------------------------------------------------------------- where the typed dicts are

def _items(value: Any, where: str) -> Iterator[tuple[str, Any]]:
    """One dict, or each element of a (nested) list/tuple of them, with its key."""
    if isinstance(value, dict):
        yield where, value
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _items(item, f"{where}.{i}")


def _scope_of(cfg: dict, inherited: str | None) -> str | None:
    scope = cfg.get("_scope_")
    return scope if isinstance(scope, str) else inherited


def _model_sites(reg: Any, node: dict, where: str, key: str,
                 scope: str | None) -> Iterator[Site]:
    """The model and every typed dict below it (backbone, neck, heads, losses, layers'
    configs), looked up in MODELS (TASK_UTILS for samplers and assigners)."""
    scope = _scope_of(node, scope)
    if "type" in node:
        registry = reg.TASK_UTILS if key in TASK_UTIL_KEYS else reg.MODELS
        popped = set()
        if "norm" in key:
            popped.add("requires_grad")  # mmcv's build_norm_layer
        if key == "dcn":
            popped.add("fallback_on_stride")  # mmseg/mmcv ResNet blocks
        yield Site(where, node, registry, scope, frozenset(popped))
    for child_key, value in node.items():
        if child_key in SKIPPED_MODEL_KEYS:
            continue
        for child_where, child in _items(value, f"{where}.{child_key}"):
            yield from _model_sites(reg, child, child_where, child_key, scope)


# mmcv's wrappers whose ``transforms`` are mmcv/mmseg transforms. Others hold foreign specs:
# ``Albu(transforms=[dict(type='Resize', height=...)])`` lists albumentations classes.
TRANSFORM_WRAPPERS = frozenset({"Compose", "KeyMapper", "TransformBroadcaster", "RandomChoice",
                                "RandomApply", "RandomOrder", "TestTimeAug"})


def _transform_sites(reg: Any, node: dict, where: str, scope: str | None) -> Iterator[Site]:
    scope = _scope_of(node, scope)
    yield Site(where, node, reg.TRANSFORMS, scope)
    if type_name(node) not in TRANSFORM_WRAPPERS:
        return
    for child_where, child in _items(node.get("transforms"), f"{where}.transforms"):
        yield from _transform_sites(reg, child, child_where, scope)


def _dataset_sites(reg: Any, node: dict, where: str, scope: str | None) -> Iterator[Site]:
    """A dataset, its wrapped datasets (ConcatDataset, RepeatDataset) and its pipeline."""
    scope = _scope_of(node, scope)
    yield Site(where, node, reg.DATASETS, scope)
    for key in ("dataset", "datasets"):
        for child_where, child in _items(node.get(key), f"{where}.{key}"):
            yield from _dataset_sites(reg, child, child_where, scope)
    for child_where, child in _items(node.get("pipeline"), f"{where}.pipeline"):
        yield from _transform_sites(reg, child, child_where, scope)


def _dataloader_sites(reg: Any, loader: dict, where: str) -> Iterator[Site]:
    from torch.utils.data import DataLoader

    yield Site(where, loader, None, None, DATALOADER_POPPED, target=DataLoader)
    if isinstance(loader.get("dataset"), dict):
        yield from _dataset_sites(reg, loader["dataset"], f"{where}.dataset", None)
    for key in ("sampler", "batch_sampler"):
        if isinstance(loader.get(key), dict):
            yield Site(f"{where}.{key}", loader[key], reg.DATA_SAMPLERS, None)
    for key in ("collate_fn", "worker_init_fn"):  # FUNCTIONS.get, then partial(fn, **rest)
        if isinstance(loader.get(key), dict):
            yield Site(f"{where}.{key}", loader[key], reg.FUNCTIONS, None, scoped=False)


def _optim_sites(reg: Any, wrapper: Any) -> Iterator[Site]:
    """The optim wrapper and its optimizer, when the default constructor (or one that
    inherits its ``__call__``, like mmseg's layer-decay ones) builds them."""
    from mmengine.optim import DefaultOptimWrapperConstructor

    if not isinstance(wrapper, dict) or not isinstance(wrapper.get("optimizer"), dict):
        return  # a dict of optim wrappers, or a constructor that builds its own
    constructor = _resolve(reg.OPTIM_WRAPPER_CONSTRUCTORS,
                           wrapper.get("constructor", "DefaultOptimWrapperConstructor"), None)
    if not (inspect.isclass(constructor)
            and issubclass(constructor, DefaultOptimWrapperConstructor)
            and constructor.__call__ is DefaultOptimWrapperConstructor.__call__):
        return
    yield Site("optim_wrapper", wrapper, reg.OPTIM_WRAPPERS, None,
               frozenset({"constructor", "paramwise_cfg"}), default_type="OptimWrapper")
    yield Site("optim_wrapper.optimizer", wrapper["optimizer"], reg.OPTIMIZERS, None)


def _scheduler_sites(reg: Any, schedulers: Any) -> Iterator[Site]:
    popped = frozenset({"convert_to_iter_based", "epoch_length"})  # build_scheduler_from_cfg
    if isinstance(schedulers, dict) and "type" not in schedulers:  # one list an optimizer
        for name, value in schedulers.items():
            for where, cfg in _items(value, f"param_scheduler.{name}"):
                yield Site(where, cfg, reg.PARAM_SCHEDULERS, None, popped)
        return
    for where, cfg in _items(schedulers, "param_scheduler"):
        yield Site(where, cfg, reg.PARAM_SCHEDULERS, None, popped)


def _hook_sites(reg: Any, cfg: Any) -> Iterator[Site]:
    priority = frozenset({"priority"})  # Runner.register_hook
    default_hooks = cfg.get("default_hooks") or {}
    for name, hook in default_hooks.items():
        if isinstance(hook, dict):
            yield Site(f"default_hooks.{name}", hook, reg.HOOKS, None, priority)
    for where, hook in _items(cfg.get("custom_hooks"), "custom_hooks"):
        yield Site(where, hook, reg.HOOKS, None, priority)


def _evaluator_sites(reg: Any, evaluator: Any, where: str) -> Iterator[Site]:
    """Runner.build_evaluator: a dict with ``metrics`` is an Evaluator, else metrics."""
    if isinstance(evaluator, dict) and "metrics" in evaluator:
        yield Site(where, evaluator, reg.EVALUATOR, None, default_type="Evaluator")
        evaluator, where = evaluator["metrics"], f"{where}.metrics"
    for metric_where, metric in _items(evaluator, where):
        yield Site(metric_where, metric, reg.METRICS, None)


def _loop_sites(reg: Any, cfg: Any) -> Iterator[Site]:
    train = cfg.get("train_cfg")
    if isinstance(train, dict):
        if "type" in train:
            yield Site("train_cfg", train, reg.LOOPS, None)
        elif "by_epoch" in train:  # Runner.build_train_loop pops by_epoch
            loop = "EpochBasedTrainLoop" if train["by_epoch"] else "IterBasedTrainLoop"
            yield Site("train_cfg", train, reg.LOOPS, None, frozenset({"by_epoch"}),
                       default_type=loop)
    for key, loop in (("val_cfg", "ValLoop"), ("test_cfg", "TestLoop")):
        if isinstance(cfg.get(key), dict):
            yield Site(key, cfg[key], reg.LOOPS, None, default_type=loop)


def _runtime_sites(reg: Any, cfg: Any) -> Iterator[Site]:
    visualizer = cfg.get("visualizer")
    if isinstance(visualizer, dict):
        yield Site("visualizer", visualizer, reg.VISUALIZERS, None)
        for where, backend in _items(visualizer.get("vis_backends"), "visualizer.vis_backends"):
            # Visualizer pops a backend's name before building it
            yield Site(where, backend, reg.VISBACKENDS, None, frozenset({"name"}))
    log_processor = cfg.get("log_processor")
    if isinstance(log_processor, dict):
        yield Site("log_processor", log_processor, reg.LOG_PROCESSORS, None,
                   default_type="LogProcessor")


def config_sites(cfg: Any) -> Iterator[Site]:
    """Every dict of a resolved config that the Runner hands to a constructor."""
    import mmengine.dataset  # noqa: F401 - registers pseudo_collate and default_collate
    import mmengine.registry as reg

    if isinstance(cfg.get("model"), dict):
        yield from _model_sites(reg, cfg.model, "model", "model", None)
    for name in ("train_dataloader", "val_dataloader", "test_dataloader"):
        if isinstance(cfg.get(name), dict):
            yield from _dataloader_sites(reg, cfg[name], name)
    yield from _optim_sites(reg, cfg.get("optim_wrapper"))
    yield from _scheduler_sites(reg, cfg.get("param_scheduler"))
    yield from _hook_sites(reg, cfg)
    for name in ("val_evaluator", "test_evaluator"):
        if cfg.get(name):
            yield from _evaluator_sites(reg, cfg[name], name)
    yield from _loop_sites(reg, cfg)
    yield from _runtime_sites(reg, cfg)


def _import_custom_modules(cfg: Any) -> None:
    """What the Runner imports first (seglab.register's FocalLoss replaces mmseg's)."""
    from mmengine.utils import import_modules_from_strings

    custom = cfg.get("custom_imports")
    if isinstance(custom, dict) and custom.get("imports"):
        try:
            import_modules_from_strings(custom["imports"], allow_failed_imports=True)
        except Exception:  # the build reports a failing import
            pass


@rule
def unknown_keys(facts: Facts) -> Iterator[Finding]:
    _import_custom_modules(facts.cfg)
    for site in config_sites(facts.cfg):
        yield from _site_findings(site)
