"""Client CPU cost per ``rollouts`` call: official ``moondream`` 2.6.1 vs ``moondream_nb``.

Both clients call the same local HTTP peer, which runs in a separate process (so its CPU time is
not counted) and answers like the real server: it echoes the request (image included) with four
rollouts. One 1600x1200 PIL image is reused for every call, as in a training loop. Reported:
median client CPU time (``time.process_time``) and wall time per call, their ratio, and the TCP
connections a fresh client opens to load a finetune and make 20 sequential calls.

    python benchmarks/client_overhead.py [--calls 40]

Requires ``pip install --no-deps moondream==2.6.1``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

PEER = r"""
import json, socket, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

stats = {"connections": 0}
ROLLOUT = {"skill": "point", "finish_reason": "stop", "output": {"points": [{"x": 0.5, "y": 0.5}]},
           "answer_tokens": [5, 6], "thinking_tokens": [], "has_answer_separator": False, "coords": [], "sizes": []}

class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def setup(self):
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        stats["connections"] += 1
    def log_message(self, *a):
        pass
    def reply(self, obj):
        data = json.dumps(obj).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def do_GET(self):
        if self.path == "/_stats":
            return self.reply(stats)
        self.reply({"finetune": {"finetune_id": "BENCH", "name": "bench", "rank": 8}})
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.path == "/_reset":
            stats["connections"] = 0
            return self.reply({})
        n = body["num_rollouts"]
        self.reply({"request": body["request"], "rollouts": [ROLLOUT] * n, "rewards": None})

server = ThreadingHTTPServer(("127.0.0.1", 0), H)
server.daemon_threads = True
print(server.server_address[1], flush=True)
server.serve_forever()
"""


def photo_like(size=(1600, 1200)) -> Image.Image:
    """A deterministic image with gradients, shapes and sensor-like noise (JPEG size of a photo)."""
    w, h = size
    r = Image.linear_gradient("L").resize(size)
    g = Image.linear_gradient("L").rotate(90).resize(size)
    b = Image.radial_gradient("L").resize(size)
    img = Image.merge("RGB", (r, g, b))
    draw = ImageDraw.Draw(img)
    for i in range(40):
        x, y = (i * 397) % w, (i * 211) % h
        draw.ellipse((x, y, x + 120, y + 90), fill=((i * 53) % 256, (i * 97) % 256, (i * 31) % 256))
    noise = Image.effect_noise(size, 24).convert("RGB")
    return Image.blend(img, noise, 0.12).filter(ImageFilter.SMOOTH)


def control(port: int, path: str) -> dict:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=b"{}" if path == "/_reset" else None)
    with urllib.request.urlopen(req) as resp:
        return json.loads(resp.read())


def measure(client, image, calls: int) -> tuple[list[float], list[float]]:
    cpu, wall = [], []
    for _ in range(calls):
        c0, w0 = time.process_time(), time.perf_counter()
        client.rollouts("point", image=image, object="bolt", num_rollouts=4)
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
    return cpu, wall


def connections_for_20(port: int, make_client, image) -> int:
    """TCP connections a fresh client opens to load the finetune and make 20 sequential calls."""
    control(port, "/_reset")
    client = make_client()
    for _ in range(20):
        client.rollouts("point", image=image, object="bolt", num_rollouts=4)
    return control(port, "/_stats")["connections"] - 1  # minus the /_stats request's own




def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=40)
    args = parser.parse_args()

    import moondream

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runs without an install too
    import moondream_nb

    peer = subprocess.Popen([sys.executable, "-c", PEER], stdout=subprocess.PIPE, text=True)
    try:
        port = int(peer.stdout.readline())
        endpoint = f"http://127.0.0.1:{port}/v1/tuning"
        image = photo_like()
        make = {
            "official moondream 2.6.1": lambda: moondream.ft("bench-key", finetune_id="BENCH", endpoint=endpoint),
            "moondream_nb": lambda: moondream_nb.ft("bench-key", finetune_id="BENCH", endpoint=endpoint),
        }
        official, ours = make["official moondream 2.6.1"](), make["moondream_nb"]()
        jpeg_kib = len(ours.images.encode(image).image_url) / 1024
        ours.images.clear()  # the first measured call pays for the encode, as in real use

        results = {}
        for name, client in (("official moondream 2.6.1", official), ("moondream_nb", ours)):
            measure(client, image, 2)  # warm up imports and code paths
            if client is ours:
                ours.images.clear()
            cpu, wall = measure(client, image, args.calls)
            results[name] = (statistics.median(cpu), statistics.median(wall),
                             connections_for_20(port, make[name], image))

        print(f"image 1600x1200, JPEG q95 data URL {jpeg_kib:.0f} KiB; {args.calls} calls each; "
              "rollouts(point, num_rollouts=4); peer echoes the request")
        print(f"{'client':<26}{'CPU ms/call':>12}{'wall ms/call':>14}{'TCP conns (load+20 calls)':>27}")
        for name, (cpu, wall, conns) in results.items():
            print(f"{name:<26}{cpu * 1e3:>12.2f}{wall * 1e3:>14.2f}{conns:>27}")
        (c_off, w_off, _), (c_ours, w_ours, _) = results.values()
        print(f"ratio official/ours: CPU {c_off / c_ours:.1f}x, wall {w_off / w_ours:.1f}x")
    finally:
        peer.terminate()
        peer.wait()


if __name__ == "__main__":
    main()
