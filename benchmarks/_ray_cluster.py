"""A Ray cluster of several nodes on this machine, for the sweep tests and ``sweep_scaling.py``.

Each node is a ``ray start --block`` in a session of its own with its own temp dir; everything it starts (GCS,
raylet, workers) stays in that session, so a node is stopped, or killed as a lost machine would be, by its own
handle: never ``ray stop``, which stops every Ray process on the machine (another user's too).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time

RAY = os.path.join(os.path.dirname(sys.executable), "ray")


def ray_env(**extra) -> dict:
    """Quiet workers, no usage stats, and an authentication token of this cluster's own (nothing read from or
    written to ~/.ray)."""
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": secrets.token_hex(32), "RAY_USAGE_STATS_ENABLED": "0", **extra}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def live_in_session(sid: int) -> list[int]:
    """Processes of session ``sid`` that have not exited (zombies excluded)."""
    pids = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as handle:
                    fields = handle.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == sid and fields[0] != "Z":
                pids.append(int(name))
    return pids


def stop_session(proc: subprocess.Popen, sig=signal.SIGKILL, timeout: float = 20) -> list[int]:
    """Signal every process of ``proc``'s session (started with ``start_new_session``); SIGKILL what is left after
    ``timeout``. Returns the processes still alive after that (none, normally)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    deadline = time.time() + timeout
    while live_in_session(proc.pid) and time.time() < deadline:
        time.sleep(0.2)
    for pid in live_in_session(proc.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait(timeout=timeout)
    time.sleep(0.5)
    return live_in_session(proc.pid)


class LocalCluster:
    """``with LocalCluster(cpus_per_node=[1, 1]) as cluster:`` a head node and a worker node of one CPU each;
    ``cluster.address``, ``cluster.env`` (the environment its clients need), ``cluster.node_ids`` (head first),
    ``cluster.kill_node(i)``."""

    def __init__(self, cpus_per_node=(1, 1), **env):
        # A lost node is noticed within ~2 s instead of Ray's default ~15 s.
        self.env = ray_env(RAY_health_check_period_ms="500", RAY_health_check_failure_threshold="4", **env)
        self.cpus_per_node = list(cpus_per_node)
        self.address = f"127.0.0.1:{free_port()}"
        self.nodes: list[subprocess.Popen] = []
        self.temp_dirs: list[str] = []
        self.node_ids: list[str] = []

    def _start_node(self, *options) -> None:
        # Short temp dirs: Ray's Unix sockets live there (a socket path has at most 107 characters).
        temp_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")
        self.temp_dirs.append(temp_dir)
        self.nodes.append(subprocess.Popen(
            [RAY, "start", *options, "--node-ip-address", "127.0.0.1", "--temp-dir", temp_dir, "--block"],
            env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))

    def __enter__(self):
        try:
            head_cpus, *worker_cpus = self.cpus_per_node
            self._start_node("--head", "--port", self.address.rsplit(":", 1)[1], "--num-cpus", str(head_cpus),
                             "--include-dashboard=false")
            self.node_ids = self.wait_for_nodes(1)
            for cpus in worker_cpus:
                self._start_node("--address", self.address, "--num-cpus", str(cpus))
            self.node_ids = self.wait_for_nodes(len(self.cpus_per_node))
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def kill_node(self, index: int) -> list[int]:
        """Kill node ``index`` and everything it runs at once (SIGKILL), as a machine that is lost."""
        return stop_session(self.nodes[index], signal.SIGKILL)

    def __exit__(self, *exc) -> None:
        self.leftovers = []
        for node in reversed(self.nodes):
            self.leftovers += stop_session(node, signal.SIGTERM)  # `ray start --block` stops its node on SIGTERM
        for temp_dir in self.temp_dirs:
            shutil.rmtree(temp_dir, ignore_errors=True)

    def wait_for_nodes(self, count: int, timeout: float = 90) -> list[str]:
        """The ids of the cluster's alive nodes, head first, once there are ``count``."""
        code = textwrap.dedent(f"""
            import time, ray
            ray.init(address={self.address!r}, logging_level="ERROR", log_to_driver=False)
            deadline = time.time() + {timeout}
            while len(alive := [n for n in ray.nodes() if n["Alive"]]) < {count} and time.time() < deadline:
                time.sleep(0.3)
            alive.sort(key=lambda n: "node:__internal_head__" not in n.get("Resources", {{}}))
            print(" ".join(n["NodeID"] for n in alive))
        """)
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=self.env,
                              timeout=timeout + 60)
        ids = proc.stdout.split()
        if proc.returncode != 0 or len(ids) < count:
            raise RuntimeError(f"the Ray cluster at {self.address} has {len(ids)} of {count} nodes: "
                               f"{proc.stderr.strip()[-500:]}")
        return ids
