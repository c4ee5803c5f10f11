from distcount_core import DistcountError


class DevStackError(DistcountError):
    """The local stack cannot do what was asked; the message says why and what to do."""
