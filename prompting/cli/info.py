"""``prompting models`` and ``prompting methods``: what works offline, and every method's settings."""

from __future__ import annotations


__all__ = ['cmd_models', 'cmd_methods']


def cmd_models(args) -> int:
    import importlib.util

    from prompting.lm.aliases import ALIASES

    print(f"{'alias':<14} {'installed':<44} description")
    for alias, entry in ALIASES.items():
        ok = "yes" if importlib.util.find_spec(entry.module) else f"no: {entry.install}"
        print(f"{alias:<14} {ok:<44} {entry.description}")
    print("\nAny Hugging Face masked or causal LM in the local cache, or a local checkpoint folder, also works.")
    return 0


def cmd_methods(args) -> int:
    from prompting.methods import METHODS
    from prompting.core.settings import settings_table

    print(settings_table([METHODS.config(name) for name in METHODS]))
    return 0
