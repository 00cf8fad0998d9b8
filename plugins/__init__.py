"""Built-in blendflag plugins, installed as ``blendflag_plugins``.

Each module is registered through the ``blendflag`` entry-point group, exactly
as a third-party plugin is; the core never imports this package directly.
"""
