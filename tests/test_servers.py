"""The test servers' own guarantees: a server process that dies mid-test is reported as such (how it died and
the tail of its log), not as the HTTP 502 that a proxy in front of it would otherwise show.

CI once failed three tests with nothing but "barrier request failed with HTTP 502": llama.cpp's server had been
compiled for another CPU and died with SIGILL on its first completion. These tests kill a stdlib server the same
way and check what the tests would then say.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import sys
from pathlib import Path

import pytest
from servers import CountingProxy, ServerProcess, free_port, server_process


def http_server(tmp_path: Path):
    port = free_port()
    cmd = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(tmp_path)]
    return server_process("stdlib http", cmd, tmp_path / "server.log", port, "/", timeout_s=30)


def get(port: int, path: str = "/") -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", path)
    resp = conn.getresponse()
    return resp.status, resp.read()


@pytest.mark.parametrize("sig", [signal.SIGILL, signal.SIGKILL])
def test_a_killed_server_is_named_with_its_signal_and_log_tail(tmp_path: Path, sig: signal.Signals) -> None:
    with http_server(tmp_path) as server:
        proxy = CountingProxy(server)
        try:
            assert get(proxy.server_address[1])[0] == 200  # through the proxy while the server lives
            os.kill(server.proc.pid, sig)
            server.proc.wait(timeout=10)
            status, body = get(proxy.server_address[1])
            message = json.loads(body)["error"]["message"]
            assert status == 502
            assert f"killed by {sig.name}" in message
            assert '"GET / HTTP/1.1" 200' in message  # the tail of the server's own log
            with pytest.raises(pytest.fail.Exception, match=f"(?s)stdlib http server process .* killed by {sig.name}"):
                server.check()
            server.check()  # reported once: the autouse fixture does not fail the test a second time
        finally:
            proxy.stop()


def test_an_exit_code_is_named_and_a_stopped_server_is_not_a_death(tmp_path: Path) -> None:
    port = free_port()
    script = (
        "import http.server,sys\n"
        "class H(http.server.BaseHTTPRequestHandler):\n"
        "    def do_GET(self):\n"
        "        self.send_response(200); self.end_headers(); self.wfile.write(b'ok')\n"
        "        if self.path == '/die': print('fatal: out of cheese', flush=True); sys.exit(3)\n"
        f"s = http.server.HTTPServer(('127.0.0.1', {port}), H)\n"
        "while True: s.handle_request()\n"
    )
    with server_process("scripted", [sys.executable, "-c", script], tmp_path / "s.log", port, "/") as server:
        assert server.death() is None
        get(port, "/die")
        server.proc.wait(timeout=10)
        death = server.death()
        assert death is not None and "exited with code 3" in death and "out of cheese" in death
        server.reported = True  # this test made it die on purpose
    assert server.death() is None  # stopped by its context manager: not a death
    assert server not in ServerProcess.RUNNING


def test_a_server_that_dies_while_starting_fails_fast(tmp_path: Path) -> None:
    cmd = [sys.executable, "-c", "import sys; print('cannot load model', flush=True); sys.exit(1)"]
    with pytest.raises(pytest.fail.Exception, match="(?s)exited with code 1.*cannot load model"):
        with server_process("broken", cmd, tmp_path / "b.log", free_port(), "/", timeout_s=30):
            pass


def test_llama_cpp_is_built_portably() -> None:
    """`make install-dev` builds llama.cpp with GGML_NATIVE=OFF: no host-only instruction set may be compiled in,
    or the library dies with SIGILL on a CI machine with another CPU (AMX, AVX-512 are not on all of them)."""
    llama_cpp = pytest.importorskip("llama_cpp")
    info = llama_cpp.llama_print_system_info().decode(errors="replace")
    host_only = [f for f in ("AMX_INT8", "AVX512", "AVX512_BF16", "AVX_VNNI") if f"{f} = 1" in info]
    assert not host_only, f"llama.cpp was compiled for this host ({', '.join(host_only)}): {info.strip()}"
