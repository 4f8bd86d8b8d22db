"""jupyterhub-singleuser starts, answers /api/status, runs a kernel, and stops.

A stand-in hub API on loopback answers what the single-user server asks the hub (its
version, the token's owner and scopes, activity reports), because the container has no
network to reach a real hub.
"""
import json
import os
import signal
import subprocess
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import websocket

HUB_PORT, PORT = 18081, 18888
TOKEN = "learn-0123456789abcdef0123456789abcdef"
PREFIX = "/user/jovyan/"
USER = {"kind": "user", "name": "jovyan", "admin": False, "groups": [], "session_id": None,
        "scopes": ["access:servers!server=jovyan/", "read:users:activity!user=jovyan"]}


class Hub(BaseHTTPRequestHandler):
    def _answer(self, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-JupyterHub-Version", "6.1.1")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._answer(USER if self.path.startswith("/hub/api/user") else {"version": "6.1.1"})

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._answer({})

    def log_message(self, *args: object) -> None:
        pass


hub = ThreadingHTTPServer(("127.0.0.1", HUB_PORT), Hub)
threading.Thread(target=hub.serve_forever, daemon=True).start()
env = dict(os.environ, JUPYTERHUB_API_TOKEN=TOKEN, JUPYTERHUB_USER="jovyan",
           JUPYTERHUB_API_URL=f"http://127.0.0.1:{HUB_PORT}/hub/api",
           JUPYTERHUB_ACTIVITY_URL=f"http://127.0.0.1:{HUB_PORT}/hub/api/users/jovyan/activity",
           JUPYTERHUB_BASE_URL="/", JUPYTERHUB_CLIENT_ID="jupyterhub-user-jovyan",
           JUPYTERHUB_SERVER_NAME="", JUPYTERHUB_SERVICE_PREFIX=PREFIX,
           JUPYTERHUB_SERVICE_URL=f"http://127.0.0.1:{PORT}{PREFIX}",
           JUPYTERHUB_OAUTH_CALLBACK_URL=f"{PREFIX}oauth_callback",
           JUPYTERHUB_OAUTH_SCOPES='["access:servers!server=jovyan/"]',
           JUPYTERHUB_OAUTH_ACCESS_SCOPES='["access:servers!server=jovyan/"]')
log = open("/tmp/singleuser.log", "wb")
server = subprocess.Popen(["jupyterhub-singleuser", "--ip=127.0.0.1", f"--port={PORT}"],
                          env=env, stdout=log, stderr=subprocess.STDOUT)
base = f"http://127.0.0.1:{PORT}{PREFIX}"
headers = {"Authorization": f"token {TOKEN}"}


def call(method: str, path: str) -> dict:
    request = urllib.request.Request(base + path, method=method, headers=headers,
                                     data=b"{}" if method == "POST" else None)
    with urllib.request.urlopen(request, timeout=120) as response:
        body = response.read()
    return json.loads(body) if body else {}


status, started = None, time.monotonic()
while time.monotonic() - started < 300 and server.poll() is None:
    try:
        status = call("GET", "api/status")
        break
    except OSError:
        time.sleep(0.2)
ready_after = round(time.monotonic() - started, 2)
result = None
if status is not None:
    kernel = call("POST", "api/kernels")
    ws = websocket.create_connection(
        f"ws://127.0.0.1:{PORT}{PREFIX}api/kernels/{kernel['id']}/channels",
        header=[f"Authorization: token {TOKEN}"], timeout=300)
    msg_id = "learn-1"
    ws.send(json.dumps({"header": {"msg_id": msg_id, "msg_type": "execute_request",
                                   "username": "jovyan", "session": "learn", "version": "5.3"},
                        "parent_header": {}, "metadata": {}, "channel": "shell",
                        "content": {"code": "import numpy; 6 * 7", "silent": False}}))
    while result is None:
        message = json.loads(ws.recv())
        if message.get("parent_header", {}).get("msg_id") == msg_id \
                and message["msg_type"] == "execute_result":
            result = message["content"]["data"]["text/plain"]
    ws.close()
    call("DELETE", f"api/kernels/{kernel['id']}")
server.send_signal(signal.SIGTERM)
code = server.wait(timeout=120)
hub.shutdown()
ok = status is not None and result == "42"
if not ok:
    with open("/tmp/singleuser.log") as handle:
        print(handle.read()[-3000:])
print(json.dumps({"workload": "server", "ok": ok, "ready_after_s": ready_after,
                  "result": result, "server_exit": code}))
raise SystemExit(0 if ok else 1)
