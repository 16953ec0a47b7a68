"""Running on many processes: process groups (``process_groups``), the tensor-parallel plan
(``tensor_parallel``), and models built and sharded from outside (``build``: tensor parallelism,
then DDP or FSDP2, on a model built on the meta device when it is sharded)."""

from solulab.distributed.process_groups import (
    DistInfo,
    all_reduce_sum,
    barrier,
    collective_timeout,
    init_distributed,
    resolve_device,
    shutdown_distributed,
)

__all__ = ["DistInfo", "all_reduce_sum", "barrier", "collective_timeout", "init_distributed",
           "resolve_device", "shutdown_distributed"]
