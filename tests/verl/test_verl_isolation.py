"""Core modules never import verl (it is an optional extra); this runs in the main suite too (no verl needed)."""

from __future__ import annotations

import subprocess
import sys

CORE = ["medvr_env", "agents", "agents.vlm", "agents.train", "agents.credit", "agents.integrations",
        "agents.integrations.verl", "agents.integrations.verl.settings", "agents.integrations.verl.session",
        "agents.integrations.verl.group", "agents.integrations.verl.entropy", "agents.integrations.verl.topk",
        "agents.integrations.verl.data"]


def test_core_and_verl_free_modules_do_not_import_verl_or_ray():
    code = ("import sys\n" + "".join(f"import {m}\n" for m in CORE)
            + "print(sorted({m.split('.')[0] for m in sys.modules} & {'verl', 'ray', 'transfer_queue', 'vllm'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"
