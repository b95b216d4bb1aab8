"""What the app and the builder import at start: heavy packages wait until what needs them runs."""
from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT


def test_the_builder_imports_ray_and_pytesseract_only_when_they_are_used_and_the_app_never_imports_ray():
    # ray: a Ray build only; pytesseract imports pandas (0.7 s of every builder's start): a build that reads text
    code = ("import sys, search.cli, search.pipeline.ray_engine; "
            "late = [m for m in ('ray', 'pandas', 'pytesseract') if m in sys.modules]; "
            "assert not late, f'the builder imported at start: {late}'; "
            "import search.web.server; assert 'ray' not in sys.modules, 'the app imported ray'; "
            "from search.images import ocr; ocr.missing(); "
            "assert ocr._tesseract().pytesseract.environ['OMP_THREAD_LIMIT'] == '1'")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
