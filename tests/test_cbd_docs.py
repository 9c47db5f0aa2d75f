"""The Python examples of docs/cbd.md run as written (in order, sharing one namespace)."""

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "cbd.md"


def test_examples_in_docs_run(tmp_path, monkeypatch, capsys):
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) >= 3
    monkeypatch.chdir(tmp_path)  # the examples write model.cbd and model_int8.tflite here
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(DOC), "exec"), namespace)
    assert (tmp_path / "model.cbd").is_file()
    assert (tmp_path / "model_int8.tflite").is_file()
    assert "bits/weight" in capsys.readouterr().out
