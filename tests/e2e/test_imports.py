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


def test_onnx_runtime_towers_run_without_torch_or_transformers(shapes_model, tmp_path):
    """An exported model embeds in a fresh interpreter that never imports torch, transformers or
    sentence-transformers: what an app start that serves from the export would pay (docs/benchmarks.md)."""
    from sentence_transformers import SentenceTransformer

    from search.embedders.onnx_runtime import clip_towers, export

    export(tmp_path / "towers", **clip_towers(SentenceTransformer(str(shapes_model), device="cpu")))
    code = ("import sys; from pathlib import Path; from PIL import Image; "
            "from search.embedders.onnx_runtime import OnnxTowers; "
            f"towers = OnnxTowers(Path({str(tmp_path / 'towers')!r}), 'int8'); "
            "assert towers.embed_texts(['a red circle', 'hình tròn đỏ']).shape == (2, towers.dimension); "
            "assert towers.embed_images([Image.new('RGB', (90, 60), 'red')]).shape == (1, towers.dimension); "
            "heavy = [m for m in ('torch', 'transformers', 'sentence_transformers') if m in sys.modules]; "
            "assert not heavy, heavy")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
