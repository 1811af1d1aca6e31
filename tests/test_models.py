"""``alpr-topo models``: the registry, what a topology uses, and pull's download + checksum
logic against a local HTTP server (tests never reach the internet)."""

from __future__ import annotations

import hashlib
import http.server
import threading
from pathlib import Path

import pytest

from alpr_topo.tools import models as tm

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
MODELS = SHARED / "models"


@pytest.fixture
def server(tmp_path: Path):
    """An HTTP server on 127.0.0.1 serving ``tmp_path/www``; yields (base URL, folder, request log)."""
    www = tmp_path / "www"
    www.mkdir()
    requests: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kw):
            super().__init__(*args, directory=str(www), **kw)

        def log_message(self, *args):  # keep test output clean
            pass

        def do_GET(self):
            requests.append(self.path)
            super().do_GET()

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", www, requests
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_registry_entries_are_complete() -> None:
    assert "plate-detector-yolov9t-416-int8" in tm.REGISTRY and "plate-ocr-cct-xs-v2-global" in tm.REGISTRY
    for model in tm.REGISTRY.values():
        assert model.files and model.source and model.provenance
        for f in model.files:
            assert f.url.startswith("https://") and f.file
            assert f.sha256 is None or (len(f.sha256) == 64 and int(f.sha256, 16) >= 0)
    ocr = tm.REGISTRY["plate-ocr-cct-xs-v2-global"]
    assert ocr.files[0].sha256.startswith("8031afb5")  # as SOURCE.md of the shared models says
    assert "open-image-models/releases/download" in tm.REGISTRY["plate-detector-yolov9t-416"].files[0].url
    assert "releases/download" in ocr.files[0].url


def test_find_known_by_name_alias_or_file() -> None:
    assert tm.find_known("plate-ocr-cct-xs-v2-global").name == "plate-ocr-cct-xs-v2-global"
    assert tm.find_known("cct-xs-v2-global-model").name == "plate-ocr-cct-xs-v2-global"
    assert tm.find_known("some/dir/plate-detector-yolov9t-416-int8.onnx").name == "plate-detector-yolov9t-416-int8"
    assert tm.find_known("yolo-v9-t-384-license-plate-end2end").name == "plate-detector-yolov9t-384"
    assert tm.find_known("mine.onnx") is None
    hint = tm.missing_model_hint("models/plate-detector-yolov9t-416-int8.onnx")
    assert "alpr-topo models pull plate-detector-yolov9t-416-int8 --dest models" in hint and "docs/models.md" in hint
    assert "docs/models.md" in tm.missing_model_hint("x/mine.onnx")


def test_shared_fixtures_match_the_registry_checksums() -> None:
    for name in ("plate-detector-yolov9t-416-int8", "plate-ocr-cct-xs-v2-global"):
        for f in tm.REGISTRY[name].files:
            path = MODELS / f.file
            if not path.exists():
                pytest.skip(f"{path} is absent (../shared/models)")
            assert tm.sha256_file(path) == f.sha256, path


def test_pull_downloads_and_checks(server, tmp_path: Path) -> None:
    base, www, requests = server
    payload = b"not really a model, but bytes with a known checksum\n" * 1000
    (www / "asset.onnx").write_bytes(payload)
    (www / "asset.yaml").write_text("alphabet: 0123\n")
    model = tm.KnownModel(
        name="test-model", what="test", source="local", provenance="test",
        files=(tm.ModelFile("test-model.onnx", f"{base}/asset.onnx", hashlib.sha256(payload).hexdigest()),
               tm.ModelFile("test-model.yaml", f"{base}/asset.yaml")),  # no checksum known
    )
    dest = tmp_path / "models"
    said: list[str] = []
    paths = tm.pull(model, dest, progress=said.append)
    assert paths == [dest / "test-model.onnx", dest / "test-model.yaml"]
    assert paths[0].read_bytes() == payload and paths[1].read_text() == "alphabet: 0123\n"
    assert any("no known checksum" in s for s in said)
    assert sorted(p.name for p in dest.iterdir()) == ["test-model.onnx", "test-model.yaml"]  # no temp files left
    # already there with the right checksum: the model file is not fetched again
    before = list(requests)
    tm.pull(model, dest)
    assert [r for r in requests[len(before):] if r.endswith(".onnx")] == []
    tm.pull(model, dest, force=True)
    assert requests[-2:] == ["/asset.onnx", "/asset.yaml"]


def test_pull_rejects_a_wrong_checksum_and_keeps_nothing(server, tmp_path: Path) -> None:
    base, www, _ = server
    (www / "asset.onnx").write_bytes(b"tampered")
    model = tm.KnownModel(name="m", what="t", source="s", provenance="p",
                          files=(tm.ModelFile("m.onnx", f"{base}/asset.onnx", "0" * 64),))
    dest = tmp_path / "models"
    with pytest.raises(tm.ChecksumError, match="not the expected"):
        tm.pull(model, dest)
    assert list(dest.iterdir()) == []


def test_pull_http_error_keeps_nothing(server, tmp_path: Path) -> None:
    base, _, _ = server
    import urllib.error

    model = tm.KnownModel(name="m", what="t", source="s", provenance="p",
                          files=(tm.ModelFile("m.onnx", f"{base}/absent.onnx"),))
    with pytest.raises(urllib.error.HTTPError):
        tm.pull(model, tmp_path / "models")
    assert list((tmp_path / "models").iterdir()) == []
    with pytest.raises(KeyError, match="unknown model"):
        tm.pull("no-such-model", tmp_path)


TOPOLOGY = """\
name: models
stages:
  cam:
    type: source.test_pattern
  plates:
    type: detect.plates
    inputs: [cam]
  yolo:
    type: detect.yolo
    inputs: [cam]
    params:
      model: ${ALPR_MODELS:-models}/plate-detector-yolov9t-416-int8.onnx
  motion:
    type: detect.motion
    inputs: [cam]
"""


def test_describe_embedded_and_missing(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("ALPR_MODELS", str(tmp_path / "empty"))
    path = tmp_path / "t.yaml"
    path.write_text(TOPOLOGY)
    rows = tm.describe(str(path))
    by = {(r["stage"], r["param"]): r for r in rows}
    assert set(by) == {("plates", "det_model"), ("plates", "rec_model"), ("yolo", "model")}
    det = by[("plates", "det_model")]
    assert det["exists"] and det["bytes"] > 1_000_000 and len(det["sha256"]) == 64
    assert det["source"].startswith("embedded in rapidocr-onnxruntime ") and "None" not in det["source"]
    yolo = by[("yolo", "model")]
    assert not yolo["exists"] and yolo["bytes"] is None and yolo["known"] == "plate-detector-yolov9t-416-int8"
    text = tm.main_text(rows)
    assert "MISSING" in text and "alpr-topo models pull plate-detector-yolov9t-416-int8" in text


def test_describe_shared_model_is_recognised(tmp_path: Path, monkeypatch) -> None:
    if not (MODELS / "plate-detector-yolov9t-416-int8.onnx").exists():
        pytest.skip(f"{MODELS} is absent (../shared/models)")
    monkeypatch.setenv("ALPR_MODELS", str(MODELS))
    path = tmp_path / "t.yaml"
    path.write_text(TOPOLOGY)
    yolo = next(r for r in tm.describe(str(path)) if r["stage"] == "yolo")
    assert yolo["exists"] and yolo["checksum_ok"] is True and yolo["known"] == "plate-detector-yolov9t-416-int8"
    assert "open-image-models" in yolo["source"]


def test_list_text_names_every_model() -> None:
    text = tm.list_text()
    for name in tm.REGISTRY:
        assert name in text


def test_build_engine_without_tensorrt_says_why(monkeypatch, tmp_path: Path) -> None:
    from alpr_topo.stages import det_tensorrt

    monkeypatch.setattr(det_tensorrt, "availability", lambda: (False, "no GPU in this test"))
    with pytest.raises(det_tensorrt.TensorRTUnavailable, match="no GPU in this test"):
        tm.build_engine(str(tmp_path / "m.onnx"))
