"""The metrics are for every app (heads, fine-tuning, grounding, `egovlp eval`): they import no torch."""

import subprocess
import sys


def test_metrics_and_eval_cli_import_without_torch():
    code = (
        "import sys, egovlp.metrics, egovlp.metrics.cli, egovlp.formats.ego4d\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'timm') if m in sys.modules)\n"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
