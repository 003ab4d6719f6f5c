"""Where the cells of ``facepriv run`` execute: the ``scheduler`` option (CLI ``--scheduler``, YAML ``scheduler:``).

``serial`` (the default) runs them one after another in the ``facepriv run`` process; ``local:N``
starts N Dask worker processes on this machine; ``tcp://HOST:PORT`` (or ``tls://``) connects to a
running Dask scheduler, e.g. one of a ``dask-jobqueue`` Slurm cluster (see
:mod:`facepriv.experiments.dask_runner`). This module only validates the value, without importing
Dask, so a config is checked before any work starts (as :func:`facepriv.device.check_device_spec`
does for ``device``).
"""

from __future__ import annotations

import re
from typing import Any

from facepriv.errors import ParameterError

#: URL schemes of a Dask scheduler address ``--scheduler`` accepts
SCHEDULER_SCHEMES = ("tcp", "tls")


def check_scheduler_spec(spec: Any) -> str | None:
    """Validate a ``scheduler`` value; returns it normalised (None = serial, in this process).

    Parameters
    ----------
    spec : str or None
        ``None``, ``serial`` (no cluster), ``local:N`` (N >= 1 local Dask worker processes) or
        ``tcp://HOST:PORT`` / ``tls://HOST:PORT`` (a running Dask scheduler).

    Raises
    ------
    ParameterError
        Any other value (the message lists the accepted forms).
    """
    forms = "serial, local:N (N worker processes on this machine) or tcp://HOST:PORT (a Dask scheduler)"
    if spec is None:
        return None
    if not isinstance(spec, str):
        raise ParameterError(f"must be {forms}, got {spec!r}", param="scheduler")
    text = spec.strip()
    if text in ("", "serial", "none"):
        return None
    m = re.fullmatch(r"local:(\d+)", text)
    if m:
        if not 1 <= int(m.group(1)) <= 1024:
            raise ParameterError(f"local:N needs 1 <= N <= 1024 worker processes, got {text!r}", param="scheduler")
        return f"local:{int(m.group(1))}"
    m = re.fullmatch(r"([a-z]+)://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})", text)
    if m and m.group(1) in SCHEDULER_SCHEMES and 0 < int(m.group(3)) < 65536:
        return text
    raise ParameterError(f"must be {forms}, got {spec!r}", param="scheduler")
