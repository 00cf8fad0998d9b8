"""Built-in sub-commands of ``blendflag-shear``, one module each."""
