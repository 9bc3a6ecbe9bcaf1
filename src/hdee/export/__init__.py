"""A run's ensemble as one Hugging Face model directory (`hdee export`), and the Auto-class registration.

`import hdee` calls `install_auto_classes()`: once transformers' Auto classes are imported (now, or
whenever the program imports them later), `hdee_ensemble` is registered with `AutoConfig` and
`AutoModelForCausalLM`, so an exported directory loads without `trust_remote_code`. Importing
hdee itself stays cheap: nothing here imports torch or transformers until then.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
import warnings

_AUTO = "transformers.models.auto.modeling_auto"


def register_auto_classes() -> None:
    """Register `hdee_ensemble` with transformers' Auto classes (imports torch and transformers)."""
    from hdee.export.modeling_hdee_ensemble import register_auto_classes as register

    register()


def _register_quietly() -> None:
    try:
        register_auto_classes()
    except Exception as exc:  # noqa: BLE001 - a failed registration must not break the importing program
        warnings.warn(f"hdee: could not register hdee_ensemble with transformers' Auto classes: {exc}", stacklevel=2)


class _RegisterAfterImport(importlib.abc.MetaPathFinder):
    """Runs the registration right after transformers' auto-model module has executed."""

    def find_spec(self, name, path, target=None):  # type: ignore[override]
        if name != _AUTO:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            _register_quietly()

        spec.loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


def install_auto_classes() -> None:
    """Register now if transformers' Auto classes are loaded, else as soon as they are."""
    if _AUTO in sys.modules:
        _register_quietly()
    elif not any(isinstance(f, _RegisterAfterImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _RegisterAfterImport())
