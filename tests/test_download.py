"""download(): local http.server and file:// URLs only, never the internet."""
from __future__ import annotations

import hashlib
import threading
from functools import partial
from http.server import BaseHTTPRequestHandler, HTTPServer, SimpleHTTPRequestHandler

import pytest

import crystalrl.data.download as dl
from crystalrl.data.download import DownloadError, download, sha256sum

PAYLOAD = b"data_x\n" * 50_000  # ~350 kB, several streaming chunks


class _Handler(SimpleHTTPRequestHandler):
    """Serves files from `directory`; the first `fail_first` GETs answer 503."""
    fail_first = 0
    requests_seen = 0

    def do_GET(self):  # noqa: N802 - http.server API
        cls = type(self)
        cls.requests_seen += 1
        if cls.requests_seen <= cls.fail_first:
            self.send_error(503, "busy")
            return
        super().do_GET()

    def log_message(self, *args):  # keep pytest output clean
        pass


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    (root / "data.bin").write_bytes(PAYLOAD)

    def start(fail_first=0):
        handler = type("H", (_Handler,), {"fail_first": fail_first, "requests_seen": 0})
        httpd = HTTPServer(("127.0.0.1", 0), partial(handler, directory=str(root)))
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        servers.append(httpd)
        return f"http://127.0.0.1:{httpd.server_address[1]}", handler

    servers: list[HTTPServer] = []
    yield start
    for s in servers:
        s.shutdown()
        s.server_close()


@pytest.fixture(autouse=True)
def no_sleep(monkeypatch):
    monkeypatch.setattr(dl.time, "sleep", lambda s: None)


SHA = hashlib.sha256(PAYLOAD).hexdigest()


def test_http_download_with_checksum(server, tmp_path):
    base, handler = server()
    dest = download(f"{base}/data.bin", tmp_path / "out" / "data.bin", sha256=SHA)
    assert dest.read_bytes() == PAYLOAD and sha256sum(dest) == SHA
    assert handler.requests_seen == 1
    assert [p.name for p in dest.parent.iterdir()] == ["data.bin"]  # no temp file left


def test_skips_when_present_with_right_checksum(server, tmp_path):
    base, handler = server()
    dest = tmp_path / "data.bin"
    download(f"{base}/data.bin", dest, sha256=SHA)
    download(f"{base}/data.bin", dest, sha256=SHA)
    assert handler.requests_seen == 1
    dest.write_bytes(b"truncated")  # a stale / broken file is fetched again
    download(f"{base}/data.bin", dest, sha256=SHA)
    assert handler.requests_seen == 2 and dest.read_bytes() == PAYLOAD


def test_retries_on_503_then_succeeds(server, tmp_path):
    base, handler = server(fail_first=2)
    dest = download(f"{base}/data.bin", tmp_path / "d.bin", sha256=SHA, retries=3, backoff=0.01)
    assert handler.requests_seen == 3 and dest.read_bytes() == PAYLOAD


def test_gives_up_after_retries(server, tmp_path):
    base, handler = server(fail_first=10)
    with pytest.raises(DownloadError, match=r"after 3 attempt\(s\).*503"):
        download(f"{base}/data.bin", tmp_path / "d.bin", retries=2)
    assert handler.requests_seen == 3 and not (tmp_path / "d.bin").exists()


def test_404_is_not_retried(server, tmp_path):
    base, handler = server()
    with pytest.raises(DownloadError, match="404"):
        download(f"{base}/missing.bin", tmp_path / "d.bin", retries=3)
    assert handler.requests_seen == 1


def test_connection_refused_is_retried(tmp_path):
    import socket
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DownloadError, match=r"after 3 attempt"):
        download(f"http://127.0.0.1:{port}/x", tmp_path / "x", retries=2, timeout=5)


def test_checksum_mismatch_names_url_and_hashes(server, tmp_path):
    base, _ = server()
    wrong = "0" * 64
    with pytest.raises(DownloadError) as err:
        download(f"{base}/data.bin", tmp_path / "out" / "d.bin", sha256=wrong)
    msg = str(err.value)
    assert f"{base}/data.bin" in msg and wrong in msg and SHA in msg
    assert list((tmp_path / "out").iterdir()) == []  # neither the file nor a temp file remains


def test_file_url(tmp_path):
    src = tmp_path / "src dir" / "a.bin"
    src.parent.mkdir()
    src.write_bytes(PAYLOAD)
    dest = download(src.as_uri(), tmp_path / "b.bin", sha256=SHA)
    assert dest.read_bytes() == PAYLOAD
    with pytest.raises(DownloadError, match="sha256 mismatch"):
        download(src.as_uri(), tmp_path / "c.bin", sha256="f" * 64)


def test_unknown_scheme(tmp_path):
    with pytest.raises(DownloadError, match="unsupported URL scheme 'ftp'"):
        download("ftp://example.org/x", tmp_path / "x")



@pytest.mark.parametrize("url", ["https://example.org/a/..", "https://example.org/a/", "https://example.org/a/%2e%2E",
                                 "https://example.org/a/.?x=1"])
def test_a_url_without_a_file_name_is_refused(tmp_path, url):
    """`download_into(folder, [".../a/.."])` once returned the parent folder as the downloaded file."""
    from crystalrl.data.download import download_into
    with pytest.raises(ValueError, match="does not end in a file name"):
        download_into(tmp_path / "raw", [url])
    assert not (tmp_path / "raw").exists() or not any((tmp_path / "raw").iterdir())
    with pytest.raises(DownloadError, match="a folder, not a file name"):
        download(url, tmp_path)


def test_file_names_drop_query_and_decode_escapes(tmp_path):
    from crystalrl.data.download import download_into, file_name_of
    assert file_name_of("https://huggingface.co/d/resolve/main/train.csv?download=true") == "train.csv"
    assert file_name_of("file:///x/a%20b.csv") == "a b.csv"
    src = tmp_path / "src dir" / "a b.bin"
    src.parent.mkdir()
    src.write_bytes(PAYLOAD)
    assert download_into(tmp_path / "raw", [src.as_uri()]) == [tmp_path / "raw" / "a b.bin"]
    with pytest.raises(ValueError, match="same file name"):
        download_into(tmp_path / "raw2", [src.as_uri(), src.as_uri() + "?again"])


class _RangeHandler(BaseHTTPRequestHandler):
    """PAYLOAD with HTTP Range support; the first response is cut after `cut_after` bytes."""
    cut_after: int | None = None
    served: list = []

    def do_GET(self):  # noqa: N802 - http.server API
        cls = type(self)
        start = int(self.headers["Range"].split("=")[1].split("-")[0]) if self.headers.get("Range") else 0
        body = PAYLOAD[start:]
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        n = len(body) if cls.cut_after is None else min(len(body), cls.cut_after)
        self.wfile.write(body[:n])
        cls.served.append((start, n))
        if n < len(body):  # a dropped connection mid-transfer
            cls.cut_after = None
            self.wfile.flush()
            self.connection.shutdown(2)
            self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture
def range_server():
    handler = type("R", (_RangeHandler,), {"cut_after": 120_000, "served": []})
    httpd = HTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/data.bin", handler
    httpd.shutdown()
    httpd.server_close()


def test_a_cut_transfer_resumes_where_it_stopped(range_server, tmp_path):
    """Issue 25: a broken multi-GB transfer restarted from zero. The retry asks for the rest only."""
    url, handler = range_server
    dest = download(url, tmp_path / "data.bin", sha256=SHA, retries=2)
    assert dest.read_bytes() == PAYLOAD and not (tmp_path / "data.bin.part").exists()
    (s0, n0), (s1, n1) = handler.served
    assert (s0, n0) == (0, 120_000) and 0 < s1 <= 120_000 and s1 + n1 == len(PAYLOAD)  # the rest only


def test_a_failed_run_leaves_the_part_for_the_next_run(range_server, tmp_path):
    url, handler = range_server
    with pytest.raises(DownloadError, match="the next run resumes it"):
        download(url, tmp_path / "data.bin", sha256=SHA, retries=0)
    kept = (tmp_path / "data.bin.part").stat().st_size
    assert kept > 0 and not (tmp_path / "data.bin").exists()
    download(url, tmp_path / "data.bin", sha256=SHA, retries=0)  # a later run
    assert (tmp_path / "data.bin").read_bytes() == PAYLOAD and handler.served[-1][0] == kept


def test_the_inputs_lock_pins_the_first_download_and_stops_a_changed_file(server, tmp_path):
    """Issue 25: nothing was pinned by default, a file already present was trusted blindly, and
    `resolve/main` can change under a finished run. The lock records the first download's sha256
    and checks every later one, in any work dir, and every file already present."""
    import yaml

    from crystalrl.data.lock import LockMismatch
    base, _ = server()
    url, lock = f"{base}/data.bin", tmp_path / "config" / "inputs.lock"
    download(url, tmp_path / "a" / "data.bin", lock=lock)
    entry = yaml.safe_load(lock.read_text())[url]
    assert entry["sha256"] == SHA and entry["size"] == len(PAYLOAD) and entry["revision"]  # the server's ETag
    download(url, tmp_path / "b" / "data.bin", lock=lock)  # another work dir: the same bytes pass
    changed = PAYLOAD + b"changed upstream\n"
    (tmp_path / "www" / "data.bin").write_bytes(changed)
    with pytest.raises(DownloadError) as err:
        download(url, tmp_path / "c" / "data.bin", lock=lock)
    assert SHA in str(err.value) and hashlib.sha256(changed).hexdigest() in str(err.value)
    assert not (tmp_path / "c" / "data.bin").exists() and not (tmp_path / "c" / "data.bin.part").exists()
    (tmp_path / "a" / "data.bin").write_bytes(b"edited in place")
    with pytest.raises(LockMismatch, match=SHA):
        download(url, tmp_path / "a" / "data.bin", lock=lock)
