"""LiteLLM, a second OpenAI client nobody here wrote, in a venv of its own (its pins clash with Luca's).

botocore, which LiteLLM requires, needs python-dateutil<3 and Luca pins 4.0.0, so LiteLLM gets
`.venv-litellm/`, made from `tests/support/litellm/requirements.txt` (exact pins) the first time a
test needs it and again whenever that file changes. LITELLM_LOCAL_MODEL_COST_MAP=True keeps it
from fetching its price list: it talks to nothing but the Luca under test.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.support import ROOT

HERE = Path(__file__).parent / "litellm"
REQUIREMENTS = HERE / "requirements.txt"
VENV = Path(os.environ.get("LITELLM_VENV", ROOT / ".venv-litellm"))


def litellm_python() -> Path:
    """The LiteLLM venv's interpreter, the venv made (or remade for changed pins) when needed."""
    stamp = VENV / ".requirements-sha256"
    digest = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    if not stamp.exists() or stamp.read_text() != digest:
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
        subprocess.run([str(VENV / "bin" / "pip"), "install", "-q", "--disable-pip-version-check",
                        "-r", str(REQUIREMENTS)], check=True, timeout=900)
        stamp.write_text(digest)
    return VENV / "bin" / "python"


def litellm_completion(api_base: str, api_key: str, messages: list[dict[str, Any]], *,
                       model: str = "openai/luca", stream: bool = False) -> dict[str, Any]:
    """litellm.completion() against api_base, run in the LiteLLM venv: {"content", "model", "usage"}."""
    request = {"api_base": api_base, "api_key": api_key, "model": model, "messages": messages, "stream": stream}
    env = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "LITELLM_LOCAL_MODEL_COST_MAP": "True",
           "LITELLM_TELEMETRY": "False", "NO_PROXY": "127.0.0.1,localhost"}
    result = subprocess.run([str(litellm_python()), "-I", str(HERE / "ask.py")], input=json.dumps(request),
                            capture_output=True, text=True, timeout=120, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"litellm failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])
