"""mmengine's config work done once per input, not once per use: a launch pays less.

Two costs that every run paid again and again, both measured on the demo config (2-core CPU):

- ``Config.pretty_text`` runs yapf over the whole config each time it is read, and a run reads it
  many times: the log at start, the dumped config, the run-time info, the TensorBoard text and
  the ``meta`` of every checkpoint saved (9 reads of ~0.5 s in a short run; a long run pays it at
  every checkpoint, and every rank pays it).
- Each ``mmseg::`` path in a config's ``_base_`` chain makes mmengine's ``is_installed`` reload
  ``pkg_resources`` (a scan of every installed distribution) and look the package up again:
  ~0.1-0.2 s a reference, 11 for the demo config.

:func:`install` memoises both where ``mmengine.config.config`` calls them (its names
``FormatCode``, ``is_installed`` and ``get_installed_path``). The yapf memo is keyed by the
exact unformatted text and the style, so it returns yapf's own output; a config that changes has
other text and is formatted anew. The package memo keeps only what was found: a package that is
not installed is looked up again (and still raises mmengine's own error).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

# A process holds a handful of configs (train, plus a test or a zoo loop): enough to keep them
# all, small enough that a long loop over configs cannot grow without bound.
MEMO_SIZE = 32


class FormatMemo:
    """``FormatCode(text, style_config=...)`` with its results kept for the last
    ``MEMO_SIZE`` distinct inputs.

    Args:
        format_code: yapf's ``FormatCode``, the function being memoised.
    """

    def __init__(self, format_code: Callable[..., tuple[str, bool]]) -> None:
        self.format_code = format_code
        self._results: OrderedDict[tuple[str, str], tuple[str, bool]] = OrderedDict()
        self.hits = 0

    def __call__(self, text: str, *args: Any, **kwargs: Any) -> tuple[str, bool]:
        key = (text, json.dumps([args, kwargs], sort_keys=True, default=repr))
        if key in self._results:
            self.hits += 1
            self._results.move_to_end(key)
            return self._results[key]
        result = self.format_code(text, *args, **kwargs)
        self._results[key] = result
        if len(self._results) > MEMO_SIZE:
            self._results.popitem(last=False)
        return result


class FoundPackageMemo:
    """A package look-up (``is_installed``, ``get_installed_path``) whose results are kept for
    the packages it found; a miss is asked again every time.

    Args:
        lookup: the function being memoised, of one package name.
    """

    def __init__(self, lookup: Callable[[str], Any]) -> None:
        self.lookup = lookup
        self._found: dict[str, Any] = {}

    def __call__(self, package: str) -> Any:
        if package in self._found:
            return self._found[package]
        result = self.lookup(package)
        if result:
            self._found[package] = result
        return result


def install() -> FormatMemo:
    """Idempotent: memoise yapf and the package look-ups of ``mmengine.config.config``;
    returns the yapf memo."""
    from mmengine.config import config as mmengine_config

    if not isinstance(mmengine_config.FormatCode, FormatMemo):
        mmengine_config.FormatCode = FormatMemo(mmengine_config.FormatCode)
    for name in ("is_installed", "get_installed_path"):
        if not isinstance(getattr(mmengine_config, name), FoundPackageMemo):
            setattr(mmengine_config, name, FoundPackageMemo(getattr(mmengine_config, name)))
    return mmengine_config.FormatCode
