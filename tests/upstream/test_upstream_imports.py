"""Import-time slowness of the pinned packages, and what importing ``upstream`` first leaves out (DESIGN rows 24
and 26). Fresh interpreters, the real packages.

``import streaming`` imports torchvision (and torch._dynamo through it) for Streaming's vision datasets, and
transformers' AutoTokenizer for its text ones; importing ``upstream`` first defers both subpackages (and
``streaming.multimodal``) until they are used. Streaming's own dataloader module imports transformers for two class
names it tests batches against; after ``upstream`` it runs against stand-ins that answer those tests as the real
classes would (DESIGN row 28).

``import composer`` (and our first ``from composer.algorithms import``) imports transformers, matplotlib.pyplot and
the platform client mcli; after ``upstream``, none of them until used."""
from __future__ import annotations

import json
import subprocess
import sys

from tests.helpers import REPO, train_env

HEAVY = ("torchvision", "torch._dynamo")


def _loaded(code: str, heavy: tuple[str, ...] = HEAVY) -> list[dict]:
    """Run ``code`` in a fresh interpreter (the repo on its path); each ``mark()`` records which ``heavy`` modules
    are loaded (really: a deferred one does not count) at that point."""
    prelude = (f"import json, sys\nsys.path.insert(0, {str(REPO)!r})\nmarks = []\n"
               f"def real(m): return m in sys.modules and type(sys.modules[m]).__name__ != '_DeferredModule'\n"
               f"def mark(): marks.append({{m: real(m) for m in {heavy!r}}})\n")
    out = subprocess.run([sys.executable, "-c", prelude + code + "\nprint(json.dumps(marks))"], env=train_env(),
                         capture_output=True, text=True, timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


AUTO_TOKENIZER = "transformers.models.auto.tokenization_auto"


def test_upstream_import_streaming_loads_torchvision_and_autotokenizer():
    assert _loaded("import streaming\nmark()", (*HEAVY, AUTO_TOKENIZER)) == [
        {"torchvision": True, "torch._dynamo": True, AUTO_TOKENIZER: True}]


def test_ours_defers_streaming_vision_and_text_until_they_are_used():
    marks = _loaded("import upstream.streaming\nmark()\n"
                    "import inspect\n[hasattr(m, '__file__') for m in list(sys.modules.values())]\n"
                    "inspect.getmodule(upstream.streaming.LeanMDSWriter)\nmark()\n"  # scans of sys.modules
                    "import streaming\nfrom streaming.vision import StreamingCIFAR10\nmark()\n"
                    "assert streaming.vision.StreamingCIFAR10 is StreamingCIFAR10\n"
                    "import streaming.vision.coco\nassert streaming.vision.coco.StreamingCOCO\nmark()\n"
                    "from streaming.text import StreamingC4\nassert streaming.text.StreamingC4 is StreamingC4\n"
                    "assert streaming.multimodal.StreamingInsideWebVid\nmark()", ("torchvision", AUTO_TOKENIZER))
    assert [m["torchvision"] for m in marks] == [False, False, True, True, True]
    assert [m[AUTO_TOKENIZER] for m in marks] == [False, False, False, False, True]


COMPOSER_HEAVY = ("transformers", "matplotlib.pyplot", "mcli")
COMPOSER_START = "import composer\nfrom composer.algorithms import GradientClipping\nmark()\n"  # as training/trainer.py


def test_upstream_import_composer_loads_transformers_matplotlib_and_mcli():
    assert _loaded(COMPOSER_START, COMPOSER_HEAVY) == [dict.fromkeys(COMPOSER_HEAVY, True)]


def test_ours_leaves_them_out_until_they_are_used():
    marks = _loaded(
        "import training\n" + COMPOSER_START +
        "import composer.algorithms.gated_linear_units.gated_linear_units as glu\n"
        "assert not glu.IS_TRANSFORMERS_INSTALLED\n"
        "from torchmetrics.utilities.imports import _MATPLOTLIB_AVAILABLE, _TRANSFORMERS_AVAILABLE\n"
        "assert _MATPLOTLIB_AVAILABLE and _TRANSFORMERS_AVAILABLE\n"  # at run time the flags answer as before
        "import mcli\nassert callable(mcli.update_run_metadata)\nmark()\n"
        "from transformers import GPT2Config\nimport matplotlib.pyplot as plt\nassert plt.figure\nmark()",
        COMPOSER_HEAVY)
    assert marks == [dict.fromkeys(COMPOSER_HEAVY, False), {"transformers": False, "matplotlib.pyplot": False,
                                                             "mcli": True}, dict.fromkeys(COMPOSER_HEAVY, True)]


def test_upstream_import_streaming_loads_transformers_for_its_dataloader():
    assert _loaded("import streaming\nmark()", ("transformers",)) == [{"transformers": True}]


def test_ours_imports_streaming_without_transformers_and_its_batch_checks_answer_the_same():
    """StreamingDataLoader counts a batch's samples by its type: a dict, transformers' BatchEncoding or BatchFeature
    (both UserDicts), a tensor, or else a sequence. The same counts once transformers is imported, and every later
    import of transformers gets the real modules."""
    marks = _loaded(
        "import upstream\nimport torch\nfrom streaming import StreamingDataLoader\nmark()\n"
        "count = StreamingDataLoader._get_batch_size\n"
        "from collections import UserDict\n"
        "assert count(None, {'a': [1, 2, 3]}) == 3 and count(None, torch.zeros(4, 2)) == 4\n"
        "assert count(None, [torch.zeros(6), torch.zeros(6)]) == 6\n"
        "from streaming.base import dataloader\n"
        "assert not isinstance(UserDict(), dataloader.BatchEncoding)\nmark()\n"
        "from transformers.tokenization_utils_base import BatchEncoding\n"
        "from transformers.feature_extraction_utils import BatchFeature\n"
        "assert BatchEncoding is not dataloader.BatchEncoding and 'UserDict' in str(BatchEncoding.__mro__)\n"
        "assert count(None, BatchEncoding({'input_ids': [[1, 2]] * 5})) == 5\n"
        "assert count(None, BatchFeature({'x': [0] * 7})) == 7\n"
        "assert isinstance(BatchEncoding(), dataloader.BatchEncoding)\n"
        "assert not isinstance(BatchFeature(), dataloader.BatchEncoding)\nmark()", ("transformers",))
    assert marks == [{"transformers": False}, {"transformers": False}, {"transformers": True}]
