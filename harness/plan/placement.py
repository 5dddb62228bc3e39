"""CPU placement: which cores the server replicas and the load generator may run on.

A server and its load generator on one machine compete for the same cores, and the server's
measured throughput then depends on how much CPU the generator took (on 2 cores, `mlp` over
gRPC measured 0.69 of what an independent client on its own core saw). Placement gives them
disjoint core sets instead. Pure: the machine's cores, the replica count and the generator's
process count in, CPU sets out; the launchers apply them (harness.servers.affinity).

``auto`` gives the generator half of the cores (rounded down, at least one, at most one per
generator process when their number is fixed) and the servers the rest; each replica gets its
own contiguous subset of the server cores. When there are more replicas than server cores,
replicas share cores round robin: the replica axis is still measured (the points and their
keys do not depend on the machine), and each replica gets one TF thread per pool.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

PlacementMode = Literal["none", "auto", "cpus"]
CpuSet = tuple[int, ...]


@dataclass(frozen=True)
class Placement:
    """The CPU sets of one server configuration and its load generator.

    Empty sets mean "not pinned" (mode ``none``, or the part the harness does not start).
    """

    mode: PlacementMode
    machine: CpuSet
    replicas: tuple[CpuSet, ...] = ()
    generator: CpuSet = ()

    @property
    def servers(self) -> CpuSet:
        """Every core any replica may use."""
        return tuple(sorted({cpu for cpus in self.replicas for cpu in cpus}))

    @property
    def shared(self) -> bool:
        """Whether the servers and the generator may run on one core (``none``: everywhere)."""
        if self.mode == "none":
            return True
        if not self.replicas:
            return False
        return bool(set(self.servers) & set(self.generator or self.machine))

    @property
    def replicas_share_cores(self) -> bool:
        return len(self.servers) < sum(len(cpus) for cpus in self.replicas)

    def threads(self, replica: int) -> int | None:
        """TF intra/inter-op threads for a replica: its core count; None when not pinned."""
        return len(self.replicas[replica]) if self.replicas else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "machine": format_cpus(self.machine),
            "servers": format_cpus(self.servers) if self.replicas else None,
            "replicas": [format_cpus(cpus) for cpus in self.replicas],
            "generator": format_cpus(self.generator) if self.generator else None,
            "shared": self.shared,
        }


def plan_placement(
    machine: Sequence[int],
    replicas: int,
    *,
    mode: PlacementMode = "auto",
    generator_processes: int | None = None,
    servers: Sequence[int] = (),
    generator: Sequence[int] = (),
    start_servers: bool = True,
) -> Placement:
    """CPU sets for ``replicas`` server processes and the load generator on ``machine``'s cores.

    ``mode`` ``none``: nothing pinned. ``cpus``: the given ``servers`` and ``generator`` sets.
    ``auto``: disjoint sets sized from the machine (module docstring); on a single core both
    get it. ``generator_processes`` (None: chosen later, from the set) caps the generator's
    share at one core per process. ``start_servers`` False (an external target): only the
    generator is placed, on every core.
    """
    cores = tuple(sorted(set(machine)))
    if mode == "none" or not cores:
        return Placement("none", cores)
    if mode == "cpus":
        return Placement("cpus", cores, split_cores(tuple(servers), replicas), tuple(generator))
    if not start_servers:
        return Placement("auto", cores, (), cores)
    server_cores, generator_cores = _auto_split(cores, generator_processes)
    return Placement("auto", cores, split_cores(server_cores, replicas), generator_cores)


def _auto_split(cores: CpuSet, generator_processes: int | None) -> tuple[CpuSet, CpuSet]:
    if len(cores) == 1:
        return cores, cores
    wanted = len(cores) // 2
    if generator_processes is not None:
        wanted = min(wanted, generator_processes)
    wanted = max(1, wanted)
    # The generator takes the highest-numbered cores: core 0 keeps most of the kernel's
    # interrupt work on many machines, and that is better charged to the servers' side.
    return cores[:-wanted], cores[-wanted:]


def split_cores(cores: CpuSet, parts: int) -> tuple[CpuSet, ...]:
    """``cores`` cut into ``parts`` contiguous subsets as equal as possible (the first ones
    one larger); with more parts than cores, part ``i`` gets core ``i mod len(cores)``."""
    if not cores or parts < 1:
        return ()
    if parts > len(cores):
        return tuple((cores[i % len(cores)],) for i in range(parts))
    size, extra = divmod(len(cores), parts)
    out, start = [], 0
    for i in range(parts):
        end = start + size + (1 if i < extra else 0)
        out.append(cores[start:end])
        start = end
    return tuple(out)


def more_processes(placement: Placement, current: int) -> int | None:
    """Processes for a re-measure of a generator-bound point: one per generator core, when
    that is more than ``current``; None when no cores remain (or the generator is not pinned)."""
    cores = len(placement.generator) if placement.generator else len(placement.machine)
    return cores if cores > current else None


def parse_cpus(text: str | int | Iterable[int]) -> CpuSet:
    """``"0-3,6"`` (taskset's list form), an int or a list of ints → sorted distinct CPUs.

    ValueError naming the problem for anything else.
    """
    if isinstance(text, bool):
        raise ValueError(f"expected a CPU list like '0-3,6' (got {text!r})")
    if isinstance(text, int):
        text = str(text)
    if not isinstance(text, str):
        return _checked(list(text))
    cpus: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        low, sep, high = part.partition("-")
        if not low.isdigit() or (sep and not high.isdigit()):
            raise ValueError(f"expected a CPU list like '0-3,6' (got {text!r})")
        first, last = int(low), int(high) if sep else int(low)
        if last < first:
            raise ValueError(f"range {part!r} runs backwards")
        cpus += range(first, last + 1)
    return _checked(cpus)


def _checked(cpus: list[Any]) -> CpuSet:
    if not cpus or not all(isinstance(c, int) and not isinstance(c, bool) for c in cpus):
        raise ValueError(f"expected a non-empty list of CPU numbers (got {cpus!r})")
    if any(c < 0 for c in cpus):
        raise ValueError(f"CPU numbers are >= 0 (got {cpus!r})")
    return tuple(sorted(set(cpus)))


def format_cpus(cpus: Iterable[int]) -> str:
    """Sorted CPUs in taskset's list form: ``(0, 1, 2, 5)`` → ``"0-2,5"``."""
    runs: list[list[int]] = []
    for cpu in sorted(set(cpus)):
        if runs and cpu == runs[-1][-1] + 1:
            runs[-1].append(cpu)
        else:
            runs.append([cpu])
    return ",".join(str(r[0]) if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs)
