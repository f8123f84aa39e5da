"""download_checkpoint against a local HTTP server on 127.0.0.1 (Range support, dropped connections)."""
from __future__ import annotations

import hashlib
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from clipsurgery_widgets.engine.errors import CheckpointError, ModelLoadError
from clipsurgery_widgets.engine.sam.downloads import (
    SAM_CHECKPOINTS,
    checkpoint_path,
    download_checkpoint,
)

PAYLOAD = hashlib.sha256(b"seed").digest() * 10_000  # 320,000 bytes, not a multiple of the chunk size
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's naming)
        srv = self.server
        rng = self.headers.get("Range")
        srv.ranges.append(rng)
        if srv.status != 200:
            self.send_error(srv.status)
            return
        data, start = srv.payload, 0
        if rng and srv.honour_range:
            start = int(re.fullmatch(r"bytes=(\d+)-", rng).group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if srv.drops_left > 0:  # promise the whole body, send part of it, hang up
            srv.drops_left -= 1
            self.wfile.write(body[:srv.drop_after])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture()
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.daemon_threads = True
    srv.payload, srv.ranges, srv.honour_range, srv.drops_left, srv.drop_after = PAYLOAD, [], True, 0, 0
    srv.status = 200
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    watchdog = threading.Timer(60, srv.shutdown)  # bounded even if a test hangs
    watchdog.start()
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}/files/sam_test.pth"
    try:
        yield srv
    finally:
        watchdog.cancel()
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=5)


def test_download_verifies_and_moves_into_place(server, tmp_path):
    path = download_checkpoint(server.url, tmp_path, sha256=PAYLOAD_SHA, progress=False)
    assert path == tmp_path / "sam_test.pth" == checkpoint_path(server.url, tmp_path)
    assert path.read_bytes() == PAYLOAD
    assert not list(tmp_path.glob("*.part"))
    assert server.ranges == [None]
    # already there and verified: no request at all
    assert download_checkpoint(server.url, tmp_path, sha256=PAYLOAD_SHA, progress=False) == path
    assert server.ranges == [None]


def test_progress_bar_runs(server, tmp_path, capsys):
    download_checkpoint(server.url, tmp_path, sha256=PAYLOAD_SHA, progress=True)
    assert "sam_test.pth" in capsys.readouterr().err


def test_checksum_mismatch_deletes_and_explains(server, tmp_path):
    wrong = "0" * 64
    with pytest.raises(CheckpointError, match=f"Checksum mismatch for {re.escape(server.url)}.*{PAYLOAD_SHA}"):
        download_checkpoint(server.url, tmp_path, sha256=wrong, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_interrupted_transfer_is_resumed_with_range(server, tmp_path):
    server.drops_left, server.drop_after = 1, 100_000
    path = download_checkpoint(server.url, tmp_path, sha256=PAYLOAD_SHA, progress=False)
    assert path.read_bytes() == PAYLOAD
    assert server.ranges == [None, "bytes=100000-"]


def test_existing_part_file_is_resumed(server, tmp_path):
    (tmp_path / "sam_test.pth.part").write_bytes(PAYLOAD[:50_000])
    path = download_checkpoint(server.url, tmp_path, sha256=PAYLOAD_SHA, progress=False)
    assert path.read_bytes() == PAYLOAD and server.ranges == ["bytes=50000-"]


def test_complete_part_file_gets_416_and_is_kept(server, tmp_path):
    (tmp_path / "sam_test.pth.part").write_bytes(PAYLOAD)
    path = download_checkpoint(server.url, tmp_path, sha256=PAYLOAD_SHA, progress=False)
    assert path.read_bytes() == PAYLOAD and server.ranges == [f"bytes={len(PAYLOAD)}-"]


def test_server_without_range_support_restarts(server, tmp_path):
    server.honour_range = False
    (tmp_path / "sam_test.pth.part").write_bytes(b"x" * 1000)  # junk that must not survive
    path = download_checkpoint(server.url, tmp_path, sha256=PAYLOAD_SHA, progress=False)
    assert path.read_bytes() == PAYLOAD


def test_corrupt_part_file_fails_checksum_and_is_removed(server, tmp_path):
    (tmp_path / "sam_test.pth.part").write_bytes(b"y" * 50_000)
    with pytest.raises(CheckpointError, match="Checksum mismatch"):
        download_checkpoint(server.url, tmp_path, sha256=PAYLOAD_SHA, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_gives_up_after_retries_and_keeps_the_part(server, tmp_path):
    server.drops_left, server.drop_after = 10, 10_000
    with pytest.raises(ModelLoadError, match="interrupted 3 times.*next call resumes"):
        download_checkpoint(server.url, tmp_path, sha256=PAYLOAD_SHA, progress=False, retries=2)
    assert (tmp_path / "sam_test.pth.part").stat().st_size == 30_000
    assert not (tmp_path / "sam_test.pth").exists()
    server.drops_left = 0
    assert download_checkpoint(server.url, tmp_path, sha256=PAYLOAD_SHA, progress=False).read_bytes() == PAYLOAD
    assert server.ranges[-1] == "bytes=30000-"


def test_existing_file_with_wrong_content_is_not_overwritten(server, tmp_path):
    (tmp_path / "sam_test.pth").write_bytes(b"someone else's file")
    with pytest.raises(CheckpointError, match="exists but its sha256.*Delete it"):
        download_checkpoint(server.url, tmp_path, sha256=PAYLOAD_SHA, progress=False)
    assert (tmp_path / "sam_test.pth").read_bytes() == b"someone else's file" and server.ranges == []


def test_offline_fails_fast_with_instructions(tmp_path):
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/segment_anything/sam_vit_b_01ec64.pth"
    start = time.monotonic()
    with pytest.raises(ModelLoadError) as info:
        download_checkpoint(url, tmp_path, progress=False, timeout=3)
    assert time.monotonic() - start < 5
    message = str(info.value)
    assert url in message and str(tmp_path / "sam_vit_b_01ec64.pth") in message
    assert "elsewhere and put it at" in message and "SamRefiner.from_checkpoint" in message
    assert list(tmp_path.iterdir()) == []


def test_http_error_is_clear(server, tmp_path):
    server.status = 404
    with pytest.raises(ModelLoadError, match=f"Could not download {re.escape(server.url)}: HTTP 404"):
        download_checkpoint(server.url, tmp_path, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_model_types_and_cache_dir(monkeypatch, tmp_path):
    assert set(SAM_CHECKPOINTS) == {"vit_b", "vit_l", "vit_h"}
    for model_type, (url, sha) in SAM_CHECKPOINTS.items():
        assert url.startswith("https://dl.fbaipublicfiles.com/segment_anything/sam_" + model_type + "_")
        assert sha is None or re.fullmatch(r"[0-9a-f]{64}", sha)
    monkeypatch.setenv("CLIPSURGERY_CACHE_DIR", str(tmp_path))
    assert checkpoint_path("vit_h") == tmp_path / "sam" / "sam_vit_h_4b8939.pth"
    with pytest.raises(ValueError, match="vit_b"):
        download_checkpoint("vit_q")
