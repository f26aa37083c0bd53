"""Extra top-level commands (``python -m lit_propulse <name>``), one module each.

Every module in this package is imported by the CLI and registers itself with
``lit_propulse.cli.register_command(name, help)``; nothing else needs editing to add a command.
"""

import importlib
import pkgutil

for _info in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_info.name}")
