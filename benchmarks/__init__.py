"""symgrad's benchmarks: ``python -m benchmarks [--quick] [--only NAME] [--out FILE]``.

``harness`` times contenders interleaved and renders markdown, ``machine`` describes the machine,
``startup`` measures cold compile and warm start in fresh processes, ``workloads/`` holds one
module per workload (F1 the neuron; F2–F4 of issue 7 slot in beside it).
"""
