"""The root of the CA's errors (see :mod:`estkit.errors` for the whole tree).

    CaError                      the CA cannot be created, loaded or used; the message says why
    ├── CaExistsError            (estkit.ca.authority) create found a CA and may not replace it
    ├── CaNotFoundError          (estkit.ca.authority) load found no CA in the directory
    ├── ManufacturerError        (estkit.ca.manufacturer) the manufacturer CA cannot be used
    └── ProfileError             (estkit.ca.profiles) a profile value is invalid (a ValueError)

The certificate store's failures are :class:`estkit.errors.StoreError` (shared with the NMOS
node's credential store), re-exported as ``estkit.ca.store.StoreError``.
"""

from __future__ import annotations

from estkit.errors import EstkitError


class CaError(EstkitError):
    """The certificate authority cannot be created, loaded or used; the message says why."""


__all__ = ["CaError"]
