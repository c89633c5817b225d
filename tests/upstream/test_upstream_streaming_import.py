"""``import streaming`` imports torchvision (and torch._dynamo through it) for Streaming's vision datasets; importing
``upstream`` first defers that module until it is used (torch._dynamo may still come with transformers, which
``streaming.text`` imports, unless transformers is told USE_TORCH=0 as the converter does). Fresh interpreters, the
real packages."""
from __future__ import annotations

import json
import subprocess
import sys

from tests.helpers import REPO, train_env

HEAVY = ("torchvision", "torch._dynamo")


def _loaded(code: str) -> list[dict]:
    """Run ``code`` in a fresh interpreter (the repo on its path); each ``mark()`` records which HEAVY modules are
    loaded at that point."""
    prelude = (f"import json, sys\nsys.path.insert(0, {str(REPO)!r})\nmarks = []\n"
               f"def mark(): marks.append({{m: m in sys.modules for m in {HEAVY!r}}})\n")
    out = subprocess.run([sys.executable, "-c", prelude + code + "\nprint(json.dumps(marks))"], env=train_env(),
                         capture_output=True, text=True, timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_upstream_import_streaming_loads_torchvision():
    assert _loaded("import streaming\nmark()") == [{"torchvision": True, "torch._dynamo": True}]


def test_ours_defers_streaming_vision_until_it_is_used():
    marks = _loaded("import upstream.streaming\nmark()\n"
                    "import inspect\n[hasattr(m, '__file__') for m in list(sys.modules.values())]\n"
                    "inspect.getmodule(upstream.streaming.LeanMDSWriter)\nmark()\n"  # scans of sys.modules
                    "import streaming\nfrom streaming.vision import StreamingCIFAR10\nmark()\n"
                    "assert streaming.vision.StreamingCIFAR10 is StreamingCIFAR10\n"
                    "import streaming.vision.coco\nassert streaming.vision.coco.StreamingCOCO\nmark()")
    assert [m["torchvision"] for m in marks] == [False, False, True, True]
