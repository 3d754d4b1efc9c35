"""python-socketio drives the three vocabularies against the real binary (docs/socketio.md).

Run by scripts/test as `.venv/bin/python test_socketio.py`; prints `N passed, N failed`.
"""

import asyncio
import json
import os
import queue
import re
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time

import aiohttp
import socketio

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def start_server():
    binary = os.environ.get("SIGNALBOX_BIN", os.path.join(REPO, "target/debug/signalbox"))
    tmp = tempfile.mkdtemp(prefix="signalbox-sio-py-")
    config = os.path.join(tmp, "config.toml")
    with open(config, "w") as f:
        f.write(f"""
[server]
public_host = "127.0.0.1"
drain_grace = "1s"
pid_file = ""
[http]
listen = "127.0.0.1:0"
static_dir = {json.dumps(os.path.join(REPO, "public"))}
shutdown_grace = "1s"
[metrics]
listen = ""
[turn]
listen = ["127.0.0.1:0"]
listen_tcp = ["127.0.0.1:0"]
listen_tls = ["127.0.0.1:0"]
[compat]
socketio = true
""")
    proc = subprocess.Popen([binary, "--config", config], cwd=tmp, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    url = None
    deadline = time.monotonic() + 20
    for line in proc.stdout:
        m = re.match(r"^signalbox: https listening on (\S+)$", line.strip())
        if m:
            url = "https://" + m.group(1)
        if line.startswith("signalbox: open ") or time.monotonic() > deadline:
            break
    if url is None:
        proc.kill()
        raise RuntimeError("signalbox did not start")
    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
    return proc, url, tmp


# The clients run on python-socketio's asyncio client, on one event loop in a thread of its own;
# the cases call them through the blocking methods below. The threaded `socketio.Client` is not
# used: its read and write threads share one ssl.SSLSocket, and now and then (about one run of
# this file in six) its reader sees the end of a healthy TLS connection and drops it, which
# shows here as an event that never arrives and on the server as a client that closed without
# close_notify. One event loop touches each socket from one thread only.
_LOOP = asyncio.new_event_loop()
threading.Thread(target=_LOOP.run_forever, daemon=True).start()


def _run(coroutine, timeout=15):
    return asyncio.run_coroutine_threadsafe(coroutine, _LOOP).result(timeout)


class _Blocking:
    """The calls the cases make on `Client.sio`, each run to completion on the event loop."""

    def __init__(self, sio):
        self._sio = sio

    def emit(self, event, data=None):
        _run(self._sio.emit(event, data))

    def get_sid(self):
        return self._sio.get_sid()

    @property
    def connected(self):
        return self._sio.connected


class Client:
    """A connected client that records every event."""

    def __init__(self, url, transports=("websocket",)):
        self.events = queue.Queue()
        self._http, sio = _run(self._connect(url, list(transports)))
        self.sio = _Blocking(sio)
        self._async = sio
        self.id = sio.get_sid()
        self.seen = []

    async def _connect(self, url, transports):
        # The server's certificate is self-signed.
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context))
        sio = socketio.AsyncClient(http_session=http, ssl_verify=False, reconnection=False)
        sio.on("*", lambda event, *args: self.events.put((event, list(args))))
        try:
            await sio.connect(url, transports=transports, wait_timeout=5)
        except BaseException:
            await http.close()
            raise
        return http, sio

    def next(self, event, timeout=3.0):
        for i, (e, args) in enumerate(self.seen):
            if e == event:
                return self.seen.pop(i)[1]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                e, args = self.events.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            if e == event:
                return args
            self.seen.append((e, args))
        raise AssertionError(f"no `{event}` within {timeout}s; got {[e for e, _ in self.seen]}")

    def none(self, event, wait=0.3):
        time.sleep(wait)
        while not self.events.empty():
            self.seen.append(self.events.get())
        assert all(e != event for e, _ in self.seen), f"unexpected `{event}`"

    def close(self):
        async def close():
            await self._async.disconnect()
            await self._http.close()

        _run(close())


def room():
    return "py-" + os.urandom(4).hex()


def ice_servers_on_connect(url):
    for transports in (("websocket",), ("polling",)):
        a = Client(url, transports)
        (servers,) = a.next("iceServers")
        turn = [s for s in servers if "username" in s]
        assert turn and turn[0]["username"].endswith(":~@socket.io:" + a.id), servers
        a.close()


def codelab(url):
    r = room()
    a, b, c = Client(url), Client(url), Client(url)
    a.sio.emit("create or join", r)
    assert a.next("created") == [r, a.id]
    b.sio.emit("create or join", r)
    assert a.next("join") == [r]
    assert b.next("joined") == [r, b.id]
    a.next("ready")
    b.next("ready")
    c.sio.emit("create or join", r)
    assert c.next("full") == [r]
    b.sio.emit("message", {"type": "answer", "sdp": "v=0"})
    assert a.next("message") == [{"type": "answer", "sdp": "v=0"}]
    c.none("message")
    a.sio.emit("ipaddr")
    assert a.next("ipaddr") == ["127.0.0.1"]
    for s in (a, b, c):
        s.close()


def room_calls(url):
    r = room()
    a, b, c = Client(url), Client(url, ("polling",)), Client(url)
    a.sio.emit("join", r)
    assert a.next("room_created") == [r]
    b.sio.emit("join", r)
    assert b.next("room_joined") == [r]
    c.sio.emit("join", r)
    assert c.next("full_room") == [r]
    b.sio.emit("start_call", r)
    a.next("start_call")
    a.sio.emit("webrtc_offer", {"roomId": r, "sdp": {"type": "offer", "sdp": "o"}})
    assert b.next("webrtc_offer") == [{"type": "offer", "sdp": "o"}]
    b.sio.emit("webrtc_answer", {"roomId": r, "sdp": {"type": "answer", "sdp": "a"}})
    assert a.next("webrtc_answer") == [{"type": "answer", "sdp": "a"}]
    cand = {"roomId": r, "label": 0, "candidate": "candidate:1"}
    b.sio.emit("webrtc_ice_candidate", cand)
    assert a.next("webrtc_ice_candidate") == [cand]
    c.sio.emit("webrtc_answer", {"roomId": r, "sdp": "x"})
    assert c.next("error")[0]["code"] == "not-in-room"
    b.close()
    time.sleep(0.3)
    c.sio.emit("join", r)
    assert c.next("room_joined") == [r]
    a.close()
    c.close()


def user_list(url):
    a, b = Client(url), Client(url)
    (lst,) = b.next("updateUserlist")
    assert a.id in lst["userList"] and b.id in lst["userList"], lst
    a.sio.emit("offer", {"to": b.id, "from": "forged", "offerSDP": "o", "offerType": "offer",
                         "audioOnly": False})
    assert b.next("offer") == [{"from": a.id, "offerSDP": "o", "offerType": "offer",
                                "audioOnly": False}]
    b.sio.emit("answer", {"to": a.id, "answerSDP": "s", "answerType": "answer"})
    assert a.next("answer") == [{"from": b.id, "answerSDP": "s", "answerType": "answer"}]
    b.sio.emit("iceCandidate", {"to": a.id, "candidate": "c", "sdpMid": "0", "sdpMLineIndex": 0})
    assert a.next("remoteIceCandidate") == [{"from": b.id, "candidate": "c", "sdpMid": "0",
                                             "sdpMLineIndex": 0, "to": a.id}]
    a.sio.emit("refuse", {"to": b.id})
    assert b.next("refuse") == [{"from": a.id}]
    a.sio.emit("disconnectPeer", {"to": b.id})
    assert b.next("disconnectPeer") == [{"from": a.id}]
    a.sio.emit("offer", {"to": "AAAAAAAAAAAAAAAA", "offerSDP": "o"})
    assert a.next("error")[0]["code"] == "unknown-peer"
    gone = a.id
    a.close()
    for _ in range(10):
        (lst,) = b.next("updateUserlist")
        if gone not in lst["userList"]:
            break
    assert gone not in lst["userList"]
    b.close()


def bad_payloads(url):
    a = Client(url)
    a.sio.emit("create or join", 42)
    assert a.next("error")[0]["code"] == "bad-request"
    a.sio.emit("webrtc_offer", "no object")
    assert a.next("error")[0]["code"] == "bad-request"
    a.close()


def server_shutdown(url, proc):
    """SIGTERM: the socket is told, then disconnected by the server when the drain grace ends."""
    a = Client(url)
    disconnected = threading.Event()
    a._async.on("disconnect", lambda *args: disconnected.set())
    proc.send_signal(signal.SIGTERM)
    assert a.next("server-shutdown") == [{"grace_s": 1, "reconnect": False}]
    assert disconnected.wait(5), "no disconnect when the drain grace ended"
    a.close()


def main():
    proc, url, tmp = start_server()
    passed = failed = 0
    try:
        # The last case stops the server.
        cases = (ice_servers_on_connect, codelab, room_calls, user_list, bad_payloads,
                 server_shutdown)
        for case in cases:
            try:
                case(url, proc) if case is server_shutdown else case(url)
                passed += 1
                print(f"ok {case.__name__}")
            except Exception as e:  # noqa: BLE001 - report every case
                failed += 1
                print(f"FAILED {case.__name__}: {e!r}")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"socketio-python: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
