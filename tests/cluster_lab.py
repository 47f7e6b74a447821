"""The lab cluster for a test module (tests/test_cluster.py, tests/test_cluster_metrics.py): started
once from the chroot the ``asterisk`` fixture installed, on a free PostgreSQL port and a folder of its
own, and taken down with its data at the end. Run such modules under flock /tmp/ivr-asterisk.lock."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ivr_lab.cluster import Cluster
from ivr_lab.controller import free_port


@contextmanager
def running_cluster(root: Path, extra_env: dict[str, str]) -> Iterator[Cluster]:
    """The whole cluster up (``root``: the installed chroot; ``extra_env`` for the controllers), down after."""
    # a folder of its own for every cluster: a kept one (IVR_KEEP_CLUSTER_DIR) must not hand its
    # Prometheus data or pid files to the next module's cluster
    directory = Path(tempfile.mkdtemp(prefix="ivr14-cluster-test-", dir="/tmp"))
    c = Cluster(dir=directory, root=root, pg_port=free_port(), extra_env=extra_env)
    try:
        c.up(install=False)
        yield c
    finally:
        c.down(keep_db=False)
        if not os.environ.get("IVR_KEEP_CLUSTER_DIR"):  # set it to read the logs after a failed run
            shutil.rmtree(directory, ignore_errors=True)
