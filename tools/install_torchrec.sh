#!/usr/bin/env bash
# Install the optional TorchRec extra (sharded embedding tables, runner.embedding_sharding) into the
# active Python environment: python -m pip install --no-deps -r requirements-torchrec.txt.
# --no-deps because torchrec's metadata asks for the CUDA fbgemm-gpu package; every dependency is
# pinned in requirements-torchrec.txt instead, so torch is never replaced. Idempotent: a second run
# finds everything installed. Ends by importing TorchRec and printing the versions.
# Usage: tools/install_torchrec.sh        (after pip install -e . in the same environment)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY="${PYTHON:-python}"
torch_before="$("$PY" -c 'import torch; print(torch.__version__)')"
"$PY" -m pip install --no-deps -r requirements-torchrec.txt
"$PY" - "$torch_before" <<'PY'
import sys
from importlib.metadata import version

import torch

if torch.__version__ != sys.argv[1]:
    sys.exit(f"install_torchrec.sh: torch changed from {sys.argv[1]} to {torch.__version__}; reinstall requirements.txt")
import fbgemm_gpu  # noqa: F401  (loads the CPU kernels)
import torchrec  # noqa: F401
from torchrec.distributed.model_parallel import DistributedModelParallel  # noqa: F401

print("torch", torch.__version__, "| torchrec", version("torchrec"), "| fbgemm-gpu-cpu", version("fbgemm-gpu-cpu"),
      "| tensordict", version("tensordict"), "| torchmetrics", version("torchmetrics"))
PY
