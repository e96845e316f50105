"""restore — design image-restoration networks by NAS, train them, deploy them.

    import restore
    r = restore.load()                      # the default gray denoiser
    clean = r(noisy_array, sigma=25)        # numpy, PIL or tensor in, same kind out
    restore.list_models()
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["Restorer", "RestoreError", "list_models", "load", "__version__"]

from restore.errors import RestoreError


def __getattr__(name: str):
    # lazy: `import restore` (and so `restore --help`) must not import torch models
    if name in ("load", "Restorer"):
        from restore import restorer

        return getattr(restorer, name)
    if name == "list_models":
        from restore.zoo.registry import list_models

        return list_models
    raise AttributeError(name)
